// The package is "type": "module"; this marks dist/cjs as CommonJS for Node's resolver.
import { writeFileSync } from "node:fs";

writeFileSync(
  new URL("../dist/cjs/package.json", import.meta.url),
  JSON.stringify({ type: "commonjs" }) + "\n",
);
