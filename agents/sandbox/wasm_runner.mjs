// The WebAssembly sandbox's process: Deno boots Pyodide (CPython compiled to wasm) and runs the same
// JSON-lines runner as the Docker sandbox (inside.py, extended by wasm_boot.py) on this process's
// stdin/stdout. Deno is started by the host with read access to the Pyodide distribution, the smolagents
// wheel, the boot files and the memory snapshot only: no network, environment, subprocesses, FFI or writes.
//
// Usage: deno run <permissions> wasm_runner.mjs <config json>
//   config: {pyodide, wheel, inside, boot, snapshot, memory_mb, mode}; mode "run" (default) serves one task,
//   mode "snapshot" (run once by the installer, with write access to the snapshot path only) boots from
//   scratch, imports what the runner needs and saves Pyodide's memory snapshot so later boots take ~1 s.
const config = JSON.parse(Deno.args[0]);
const { loadPyodide } = await import(new URL("pyodide.mjs", `file://${config.pyodide}/`).href);

function writeAll(stream, buffer) {
  let done = 0;
  while (done < buffer.length) done += stream.writeSync(buffer.subarray(done));
  return buffer.length;
}

const options = {
  indexURL: config.pyodide,
  env: { HOME: "/tmp", LANG: "C.UTF-8", PYTHONDONTWRITEBYTECODE: "1" },
  stdout: () => {},
  stderr: () => {},
  checkAPIVersion: true,
};
let fromSnapshot = false;
if (config.mode === "snapshot") {
  options._makeSnapshot = true;
} else if (config.snapshot) {
  try {
    options._loadSnapshot = Deno.readFileSync(config.snapshot);
    fromSnapshot = true;
  } catch (_) {
    // no snapshot yet: a full boot (slower, same result)
  }
}
if (fromSnapshot) {
  // Pyodide restores a snapshot into the module's initial memory (30 MiB) without growing it first, so a
  // snapshot of a bigger heap would not fit: grow the fresh instance's memory before Emscripten maps it.
  const pages = Math.ceil(options._loadSnapshot.length / 65536);
  const grow = (result) => {
    const instance = result.instance ?? result;
    for (const value of Object.values(instance.exports ?? {})) {
      if (value instanceof WebAssembly.Memory && value.buffer.byteLength / 65536 < pages) {
        value.grow(pages - value.buffer.byteLength / 65536);
      }
    }
    return result;
  };
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = (...args) => instantiate(...args).then(grow);
  const streaming = WebAssembly.instantiateStreaming;
  if (streaming) WebAssembly.instantiateStreaming = (...args) => streaming(...args).then(grow);
}
const pyodide = await loadPyodide(options);

// The smolagents wheel and the runner's Python files live in Pyodide's in-memory filesystem; a snapshot holds
// only wasm memory (the imported modules), so they are written again on every boot.
pyodide.FS.mkdirTree("/agentdesk");
pyodide.FS.writeFile("/agentdesk/smolagents.whl", Deno.readFileSync(config.wheel));
pyodide.FS.writeFile("/agentdesk/inside.py", Deno.readFileSync(config.inside));
pyodide.FS.writeFile("/agentdesk/wasm_boot.py", Deno.readFileSync(config.boot));

if (config.mode === "snapshot") {
  const modules = pyodide.runPython(
    "import sys; sys.path.insert(0, '/agentdesk'); import wasm_boot; wasm_boot.prepare(); wasm_boot.available_modules()",
  );
  const snapshot = pyodide.makeMemorySnapshot();
  Deno.writeFileSync(config.snapshot, snapshot);
  writeAll(Deno.stdout, new TextEncoder().encode(JSON.stringify({ type: "snapshot", bytes: snapshot.length, modules: JSON.parse(modules) }) + "\n"));
  Deno.exit(0);
}

pyodide.setStdin({ read: (buffer) => Deno.stdin.readSync(buffer) ?? 0 });
pyodide.setStdout({ write: (buffer) => writeAll(Deno.stdout, buffer) });
pyodide.setStderr({ write: (buffer) => writeAll(Deno.stderr, buffer) });
const serve = pyodide.runPython(
  "import sys; sys.path.insert(0, '/agentdesk'); import wasm_boot; wasm_boot.serve",
);
Deno.exit(serve(config.memory_mb, fromSnapshot) ?? 0);
