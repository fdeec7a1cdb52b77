// Converts one splat file with spz-js (arrival.space's SPZ library, on PlayCanvas), as a user of
// that library would: node spzjs.mjs IN OUT, each .ply, .compressed.ply or .spz (by suffix).
import { createReadStream, readFileSync, writeFileSync } from 'fs';
import { Readable } from 'stream';
import { loadCompressedPly, loadPly, loadSpz, serializeCompressedPly, serializePly, serializeSpz } from 'spz-js';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
    console.error('usage: node spzjs.mjs IN OUT (.ply, .compressed.ply or .spz)');
    process.exit(2);
}
const stream = () => Readable.toWeb(createReadStream(input));
const cloud = input.endsWith('.spz') ? await loadSpz(readFileSync(input))
    : input.endsWith('.compressed.ply') ? await loadCompressedPly(stream())
    : input.endsWith('.ply') ? await loadPly(stream())
    : null;
if (!cloud) {
    console.error(`${input}: spz-js reads .ply, .compressed.ply and .spz`);
    process.exit(2);
}
const bytes = output.endsWith('.spz') ? await serializeSpz(cloud)
    : output.endsWith('.compressed.ply') ? serializeCompressedPly(cloud)
    : output.endsWith('.ply') ? serializePly(cloud)
    : null;
if (!bytes) {
    console.error(`${output}: spz-js writes .ply, .compressed.ply and .spz`);
    process.exit(2);
}
writeFileSync(output, Buffer.from(bytes));
