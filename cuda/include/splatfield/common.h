// Shared constants and tiny value types for the CPU and CUDA drivers.
// Everything here is header-only and usable from host and device code.
#pragma once

#if defined(__CUDACC__)
#define SF_HD __host__ __device__ __forceinline__
#else
#define SF_HD inline
#endif

#include <math.h>

namespace splatfield {

// Compositing conventions (ARCHITECTURE.md): contributions below kAlphaMin are
// skipped, alpha is clamped at kAlphaMax, and a pixel stops before its
// transmittance would fall to kTransmittanceMin or below.
constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kAlphaMax = 0.99f;
constexpr float kTransmittanceMin = 1e-4f;
constexpr int kTile = 16;

struct Vec2 {
  float x, y;
};
struct Vec3 {
  float x, y, z;
};
// Symmetric 2x2 matrix [[a, b], [b, c]].
struct Sym2 {
  float a, b, c;
};
// Row-major 3x3 matrix.
struct Mat3 {
  float m[3][3];
};

SF_HD Vec3 operator+(Vec3 u, Vec3 v) { return {u.x + v.x, u.y + v.y, u.z + v.z}; }
SF_HD Vec3 operator-(Vec3 u, Vec3 v) { return {u.x - v.x, u.y - v.y, u.z - v.z}; }
SF_HD Vec3 operator*(float s, Vec3 v) { return {s * v.x, s * v.y, s * v.z}; }
SF_HD float dot(Vec3 u, Vec3 v) { return u.x * v.x + u.y * v.y + u.z * v.z; }

SF_HD Vec3 matvec(const Mat3& A, Vec3 v) {
  return {A.m[0][0] * v.x + A.m[0][1] * v.y + A.m[0][2] * v.z,
          A.m[1][0] * v.x + A.m[1][1] * v.y + A.m[1][2] * v.z,
          A.m[2][0] * v.x + A.m[2][1] * v.y + A.m[2][2] * v.z};
}
// A^T v
SF_HD Vec3 matTvec(const Mat3& A, Vec3 v) {
  return {A.m[0][0] * v.x + A.m[1][0] * v.y + A.m[2][0] * v.z,
          A.m[0][1] * v.x + A.m[1][1] * v.y + A.m[2][1] * v.z,
          A.m[0][2] * v.x + A.m[1][2] * v.y + A.m[2][2] * v.z};
}
SF_HD Mat3 matmul(const Mat3& A, const Mat3& B) {
  Mat3 C;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      C.m[i][j] = A.m[i][0] * B.m[0][j] + A.m[i][1] * B.m[1][j] + A.m[i][2] * B.m[2][j];
  return C;
}
SF_HD Mat3 transpose(const Mat3& A) {
  Mat3 T;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) T.m[i][j] = A.m[j][i];
  return T;
}
SF_HD Mat3 mat_add(const Mat3& A, const Mat3& B) {
  Mat3 C;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) C.m[i][j] = A.m[i][j] + B.m[i][j];
  return C;
}

SF_HD bool finite3(Vec3 v) { return isfinite(v.x) && isfinite(v.y) && isfinite(v.z); }

// ---------------------------------------------------------------------------
// Number types for the per-pixel math. The formulas in composite.h are
// templates over F: `float` (CUDA: one thread per pixel) or, on the CPU, an
// 16-lane GCC vector (one 16-pixel tile row at a time). Conditions use
// `m ? a : b` and `&`, which both types support; the helpers below cover the
// rest, with the same operation sequence for both so the results agree.
// ---------------------------------------------------------------------------
#if !defined(__CUDACC__)
// Lane vectors for the CPU drivers: 16 floats (one AVX-512 register) or 8
// (one AVX2 register); the driver picks the width the target supports.
typedef float f16 __attribute__((vector_size(64)));
typedef int i16 __attribute__((vector_size(64)));
typedef float f8 __attribute__((vector_size(32)));
typedef int i8 __attribute__((vector_size(32)));
SF_HD f16 sf_pow2i(f16 n) {  // 2^n for integral n in [-126, 127]
  return (f16)((__builtin_convertvector(n, i16) + 127) << 23);
}
SF_HD f8 sf_pow2i(f8 n) { return (f8)((__builtin_convertvector(n, i8) + 127) << 23); }
#endif
SF_HD float sf_pow2i(float n) {
  const int bits = ((int)n + 127) << 23;
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

template <typename F>
SF_HD F sf_min(F a, F b) { return a < b ? a : b; }
template <typename F>
SF_HD F sf_max(F a, F b) { return a > b ? a : b; }

// exp(x) to about 1 ulp (Cephes' expf polynomial); flushes to ~1e-38 below -87.
// Rounds to the nearest integer with the 1.5 * 2^23 trick (valid because
// -ffp-contract=off / --fmad=false keep the two additions apart).
template <typename F>
SF_HD F sf_exp(F x) {
  x = sf_max(sf_min(x, F{} + 88.f), F{} - 87.f);
  const F n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const F r = x - n * 0.693359375f - n * -2.12194440e-4f;
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return (p * r * r + r + 1.f) * sf_pow2i(n);
}

}  // namespace splatfield
