/**
 * Static checks of examples/surgeon.ipynb: valid nbformat 4.5 JSON with unique cell ids, the Deno
 * kernel, no stored outputs, and code cells that type-check when joined into one module (the
 * notebook itself is executed by scripts/run_notebook.sh, not here).
 */
import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";

const notebookPath = fromFileUrl(new URL("../examples/surgeon.ipynb", import.meta.url));

interface Cell {
  cell_type: string;
  id?: unknown;
  metadata?: unknown;
  source: unknown;
  outputs?: unknown[];
  execution_count?: unknown;
}

async function readNotebook(): Promise<
  { nbformat: number; nbformat_minor: number; metadata: { kernelspec?: unknown }; cells: Cell[] }
> {
  return JSON.parse(await Deno.readTextFile(notebookPath));
}

function sourceText(cell: Cell): string {
  return Array.isArray(cell.source) ? cell.source.join("") : String(cell.source);
}

Deno.test("surgeon.ipynb is nbformat 4.5 with the Deno kernelspec", async () => {
  const nb = await readNotebook();
  assert.equal(nb.nbformat, 4);
  assert.ok(nb.nbformat_minor >= 5, `nbformat_minor ${nb.nbformat_minor} < 5: cell ids need 4.5`);
  assert.deepEqual(nb.metadata.kernelspec, {
    display_name: "Deno",
    language: "typescript",
    name: "deno",
  });
  assert.ok(nb.cells.length >= 4, "notebook has too few cells");
});

Deno.test("surgeon.ipynb cells have unique valid ids, list sources and no stored outputs", async () => {
  const nb = await readNotebook();
  const seen = new Set<string>();
  nb.cells.forEach((cell, i) => {
    assert.ok(
      ["code", "markdown", "raw"].includes(cell.cell_type),
      `cell ${i}: type ${cell.cell_type}`,
    );
    assert.equal(typeof cell.id, "string", `cell ${i} has no id`);
    const id = cell.id as string;
    // nbformat 4.5 schema: 1–64 characters from [a-zA-Z0-9-_]
    assert.match(id, /^[a-zA-Z0-9_-]{1,64}$/, `cell ${i}: invalid id ${id}`);
    assert.ok(!seen.has(id), `cell ${i}: duplicate id ${id}`);
    seen.add(id);
    assert.ok(
      Array.isArray(cell.source) && cell.source.every((s) => typeof s === "string"),
      `cell ${i}: source must be a list of strings`,
    );
    assert.equal(typeof cell.metadata, "object", `cell ${i}: metadata missing`);
    if (cell.cell_type === "code") {
      assert.deepEqual(
        cell.outputs,
        [],
        `cell ${i} (${id}) has stored outputs: clear them before committing`,
      );
      assert.equal(cell.execution_count, null, `cell ${i} (${id}) has an execution count`);
    }
  });
});

/** The code cells joined into one module, with imports relative to examples/ made absolute. */
function notebookModule(cells: Cell[]): string {
  const examples = new URL("../examples/", import.meta.url);
  const code = cells.filter((c) => c.cell_type === "code").map(sourceText).join("\n\n");
  return code.replace(
    /(?<=\bfrom\s*|\bimport\(\s*)(["'])(\.\.?\/[^"']*)\1/g,
    (_m, quote: string, rel: string) => `${quote}${new URL(rel, examples).href}${quote}`,
  ) + "\nexport {};\n";
}

Deno.test("surgeon.ipynb code cells type-check as one module", async () => {
  const nb = await readNotebook();
  const dir = await Deno.makeTempDir({ prefix: "nb_check_" });
  const tmp = `${dir}/surgeon_notebook.ts`;
  await Deno.writeTextFile(tmp, notebookModule(nb.cells));
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "check",
        "--quiet",
        `--config=${fromFileUrl(new URL("../deno.json", import.meta.url))}`,
        tmp,
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const log = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, `deno check of the notebook's code cells failed:\n${log}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
