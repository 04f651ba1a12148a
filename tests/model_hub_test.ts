/**
 * Hub client against a local imitation of the Hub on 127.0.0.1: file listing, `resolve` with
 * ETag/commit headers, 302 redirects to a "CDN" on another port, Range requests (one download is
 * cut midway and must resume), gated repositories (401 without a token), the cache layout,
 * offline mode, an unreachable Hub and the environment variables.
 */
import assert from "node:assert/strict";
import {
  hubCacheDir,
  hubDownloadFile,
  HubError,
  type HubOptions,
  hubToken,
  listRepoFiles,
  resolveModel,
} from "../model/hub.ts";
import { loadConfig } from "../model/config.ts";
import { openCheckpoint, writeSafetensors } from "../model/safetensors.ts";

interface FakeFile {
  bytes: Uint8Array<ArrayBuffer>;
  etag: string;
  lfs: boolean;
}

interface Logged {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | null;
  auth: string | null;
}

const enc = new TextEncoder();

async function hex(algo: "SHA-1" | "SHA-256", bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest(algo, bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A fake Hub (and a fake CDN on another port) serving a few repositories. */
class FakeHub {
  readonly log: Logged[] = [];
  readonly repos = new Map<
    string,
    { commit: string; files: Map<string, FakeFile>; gated?: boolean }
  >();
  /** CDN paths whose next full (non-Range) GET is cut after half of the bytes. */
  readonly cutOnce = new Set<string>();
  readonly blobs = new Map<string, Uint8Array<ArrayBuffer>>();
  /** Hub paths answered once with 503 (busy server). */
  readonly busyOnce = new Set<string>();
  hub!: Deno.HttpServer<Deno.NetAddr>;
  cdn!: Deno.HttpServer<Deno.NetAddr>;

  get endpoint(): string {
    return `http://127.0.0.1:${this.hub.addr.port}`;
  }

  async addRepo(
    id: string,
    files: Record<string, Uint8Array | string>,
    opts: { gated?: boolean; lfs?: string[] } = {},
  ): Promise<string> {
    const commit = (await hex("SHA-1", enc.encode(id + Object.keys(files).join()))).slice(0, 40);
    const map = new Map<string, FakeFile>();
    for (const [name, content] of Object.entries(files)) {
      const bytes = new Uint8Array(typeof content === "string" ? enc.encode(content) : content);
      const lfs = opts.lfs?.includes(name) ?? name.endsWith(".safetensors");
      const etag = lfs ? await hex("SHA-256", bytes) : await hex("SHA-1", bytes);
      map.set(name, { bytes, etag, lfs });
      if (lfs) this.blobs.set(etag, bytes);
    }
    this.repos.set(id, { commit, files: map, gated: opts.gated });
    return commit;
  }

  start(): void {
    this.cdn = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.#cdn(req),
    );
    this.hub = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.#hub(req),
    );
  }

  async stop(): Promise<void> {
    await this.hub.shutdown();
    await this.cdn.shutdown();
  }

  #record(server: "hub" | "cdn", req: Request): URL {
    const url = new URL(req.url);
    this.log.push({
      server,
      method: req.method,
      path: decodeURIComponent(url.pathname),
      range: req.headers.get("range"),
      auth: req.headers.get("authorization"),
    });
    return url;
  }

  #hub(req: Request): Response {
    const url = this.#record("hub", req);
    const p = decodeURIComponent(url.pathname);
    if (this.busyOnce.delete(p)) return new Response("busy", { status: 503 });
    let m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/revision\/(.+)$/);
    if (m) {
      const repo = this.repos.get(m[2]);
      if (!repo) {
        return new Response("no", { status: 404, headers: { "x-error-code": "RepoNotFound" } });
      }
      if (repo.gated && req.headers.get("authorization") !== "Bearer hf_secret") {
        return new Response("gated", { status: 401, headers: { "x-error-code": "GatedRepo" } });
      }
      if (!["main", "v1", repo.commit].includes(m[3])) {
        return new Response("", { status: 404, headers: { "x-error-code": "RevisionNotFound" } });
      }
      return Response.json({
        sha: repo.commit,
        siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }
    m = p.match(/^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    if (!m) return new Response("?", { status: 400 });
    const repo = this.repos.get(m[2]);
    if (!repo) {
      return new Response("", { status: 404, headers: { "x-error-code": "RepoNotFound" } });
    }
    if (repo.gated && req.headers.get("authorization") !== "Bearer hf_secret") {
      return new Response(null, { status: 401, headers: { "x-error-code": "GatedRepo" } });
    }
    const file = repo.files.get(m[4]);
    if (!file) {
      return new Response(null, { status: 404, headers: { "x-error-code": "EntryNotFound" } });
    }
    const headers: Record<string, string> = { "x-repo-commit": repo.commit };
    if (file.lfs) {
      headers["x-linked-etag"] = `"${file.etag}"`;
      headers["x-linked-size"] = String(file.bytes.length);
      headers["etag"] = `"${file.etag.slice(0, 10)}-not-this-one"`;
      headers["location"] = `http://127.0.0.1:${this.cdn.addr.port}/blobs/${file.etag}`;
      return new Response(null, { status: 302, headers });
    }
    headers["etag"] = `W/"${file.etag}"`;
    headers["content-length"] = String(file.bytes.length);
    return new Response(req.method === "HEAD" ? null : file.bytes, { status: 200, headers });
  }

  #cdn(req: Request): Response {
    const url = this.#record("cdn", req);
    const etag = url.pathname.replace("/blobs/", "");
    const bytes = this.blobs.get(etag);
    if (!bytes) return new Response(null, { status: 404 });
    const range = req.headers.get("range");
    if (range) {
      const start = Number(range.match(/^bytes=(\d+)-$/)![1]);
      if (start >= bytes.length) return new Response(null, { status: 416 });
      return new Response(bytes.slice(start), {
        status: 206,
        headers: { "content-range": `bytes ${start}-${bytes.length - 1}/${bytes.length}` },
      });
    }
    if (this.cutOnce.delete(url.pathname)) {
      const half = bytes.slice(0, bytes.length >> 1);
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(half);
          setTimeout(() => c.error(new Error("connection cut")), 30);
        },
      });
      return new Response(body, { headers: { "content-length": String(bytes.length) } });
    }
    return new Response(bytes, { headers: { "content-length": String(bytes.length) } });
  }
}

async function weightsFile(dir: string, n: number): Promise<Uint8Array> {
  const data = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  await writeSafetensors(`${dir}/w.safetensors`, [{ name: "w", shape: [n], data }]);
  return await Deno.readFile(`${dir}/w.safetensors`);
}

const TINY_CONFIG = JSON.stringify({ model_type: "llama", hidden_size: 8, num_attention_heads: 2 });

async function withHub(
  fn: (hub: FakeHub, cache: string, opts: HubOptions) => Promise<void>,
): Promise<void> {
  const hub = new FakeHub();
  const cache = await Deno.makeTempDir();
  try {
    hub.start();
    await fn(hub, cache, { endpoint: hub.endpoint, cacheDir: cache, token: null, offline: false });
  } finally {
    await hub.stop();
    await Deno.remove(cache, { recursive: true });
  }
}

Deno.test("hub: resolveModel downloads into the HF cache layout, resumes a cut download, reuses the cache", async () => {
  await withHub(async (hub, cache, opts) => {
    const weights = await weightsFile(cache, 50_000);
    const commit = await hub.addRepo("org/tiny", {
      "config.json": TINY_CONFIG,
      "generation_config.json": "{}",
      "tokenizer.json": '{"model": {}}',
      "special_tokens_map.json": "",
      "README.md": "# not needed",
      "pytorch_model.bin": "pickle, not needed",
      "model.safetensors": weights,
    });
    const etag = hub.repos.get("org/tiny")!.files.get("model.safetensors")!.etag;
    hub.cutOnce.add(`/blobs/${etag}`);
    const progress: string[] = [];
    const dir = await resolveModel("org/tiny", { ...opts, onProgress: (m) => progress.push(m) });
    const repoDir = `${cache}/models--org--tiny`;
    assert.equal(dir, `${repoDir}/snapshots/${commit}`);
    assert.equal(await Deno.readTextFile(`${repoDir}/refs/main`), commit);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
      ],
    );
    assert.equal(await Deno.readLink(`${dir}/model.safetensors`), `../../blobs/${etag}`);
    const cfgEtag = hub.repos.get("org/tiny")!.files.get("config.json")!.etag;
    assert.equal(
      await Deno.readLink(`${dir}/config.json`),
      `../../blobs/${cfgEtag}`,
      "weak ETag normalised",
    );
    assert.deepEqual(await Deno.readFile(`${dir}/model.safetensors`), weights);
    assert.equal((await Deno.stat(`${dir}/special_tokens_map.json`)).size, 0, "empty file");
    assert.deepEqual(
      [...Deno.readDirSync(`${repoDir}/blobs`)].map((e) => e.name).filter((n) =>
        n.includes("incomplete")
      ),
      [],
    );
    // the cut download resumed with a Range request, and the token never went to the CDN
    const cdnGets = hub.log.filter((l) => l.server === "cdn");
    assert.equal(cdnGets.length, 2, JSON.stringify(cdnGets));
    assert.equal(cdnGets[0].range, null);
    const resumeAt = Number(cdnGets[1].range?.match(/^bytes=(\d+)-$/)?.[1]);
    assert.ok(resumeAt > 0 && resumeAt < weights.length, `resumed at ${cdnGets[1].range}`);
    assert.ok(progress.some((m) => m.includes("interrupted")), progress.join("\n"));
    assert.equal((await loadConfig(dir)).modelType, "llama");
    const ck = await openCheckpoint(dir);
    assert.equal(ck.shape("w")[0], 50_000);
    ck.close();

    // second call: only metadata requests, nothing downloaded again
    const before = hub.log.length;
    assert.equal(await resolveModel("org/tiny", opts), dir);
    const again = hub.log.slice(before);
    assert.ok(
      again.every((l) => l.server === "hub" && (l.method === "HEAD" || l.path.startsWith("/api/"))),
    );

    // a tag resolving to the same commit gets its own ref
    assert.equal(await resolveModel("org/tiny", { ...opts, revision: "v1" }), dir);
    assert.equal(await Deno.readTextFile(`${repoDir}/refs/v1`), commit);

    // offline: from the cache, without any request
    const n = hub.log.length;
    assert.equal(await resolveModel("org/tiny", { ...opts, offline: true }), dir);
    assert.equal(hub.log.length, n);
    await assert.rejects(
      () => resolveModel("org/absent", { ...opts, offline: true }),
      (e: unknown) =>
        e instanceof HubError && /not in the cache/.test(e.message) &&
        /HF_HUB_OFFLINE/.test(e.message),
    );

    // no network: the cached snapshot is used; an uncached repo says how to use a local folder
    const down = { ...opts, endpoint: "http://127.0.0.1:9" };
    assert.equal(await resolveModel("org/tiny", down), dir);
    await assert.rejects(
      () => resolveModel("org/other", down),
      (e: unknown) =>
        e instanceof HubError && /cannot reach/.test(e.message) && /pass its path/.test(e.message),
    );
  });
});

Deno.test("hub: sharded weights, gated repositories, pickle-only and missing repositories", async () => {
  await withHub(async (hub, cache, opts) => {
    const shard = await weightsFile(cache, 300);
    const index = JSON.stringify({ weight_map: { w: "model-00001-of-00001.safetensors" } });
    const commit = await hub.addRepo("org/sharded", {
      "config.json": TINY_CONFIG,
      "model.safetensors.index.json": index,
      "model-00001-of-00001.safetensors": shard,
    });
    hub.busyOnce.add(`/org/sharded/resolve/${commit}/config.json`);
    const dir = await resolveModel("org/sharded", opts);
    const heads = hub.log.filter((l) =>
      l.method === "HEAD" && l.path === `/org/sharded/resolve/${commit}/config.json`
    );
    assert.equal(heads.length, 2, "a 503 answer is retried");
    assert.ok(dir.endsWith(commit));
    const ck = await openCheckpoint(dir);
    assert.deepEqual(ck.names(), ["w"]);
    ck.close();

    await hub.addRepo("org/gated", { "config.json": TINY_CONFIG, "model.safetensors": shard }, {
      gated: true,
    });
    await assert.rejects(
      () => resolveModel("org/gated", opts),
      (e: unknown) =>
        e instanceof HubError && e.status === 401 && /HF_TOKEN/.test(e.message) &&
        /accept its license/.test(e.message),
    );
    await assert.rejects(
      () => resolveModel("org/gated", { ...opts, token: "hf_wrong" }),
      (e: unknown) => e instanceof HubError && /refused with your token/.test(e.message),
    );
    const gatedDir = await resolveModel("org/gated", { ...opts, token: "hf_secret" });
    assert.ok(await Deno.stat(`${gatedDir}/model.safetensors`));
    const hubAuth = hub.log.filter((l) =>
      l.server === "hub" && l.path.includes("gated") && l.auth === "Bearer hf_secret"
    );
    assert.ok(hubAuth.length >= 2, "token sent to the Hub");
    assert.ok(
      hub.log.filter((l) => l.server === "cdn").every((l) => l.auth === null),
      "token not sent to the CDN",
    );

    await hub.addRepo("org/pickle", { "config.json": TINY_CONFIG, "pytorch_model.bin": "x" });
    await assert.rejects(() => resolveModel("org/pickle", opts), /safe_serialization=True/);
    await assert.rejects(
      () => resolveModel("org/missing", opts),
      (e: unknown) => e instanceof HubError && e.status === 404 && /not found/.test(e.message),
    );
    await assert.rejects(
      () => resolveModel("org/sharded", { ...opts, revision: "nope" }),
      /revision "nope"/,
    );
    await assert.rejects(() => resolveModel("./no/such/folder", opts), /no such folder/);

    // allowPatterns selects files by glob
    const picked = await resolveModel("org/sharded", { ...opts, allowPatterns: ["*.json"] });
    assert.ok(picked.endsWith(commit));
  });
});

Deno.test("hub: local folders, dataset files, listing", async () => {
  await withHub(async (hub, cache, opts) => {
    const local = `${cache}/local-model`;
    await Deno.mkdir(local);
    await assert.rejects(() => resolveModel(local, opts), /no config\.json/);
    await Deno.writeTextFile(`${local}/config.json`, TINY_CONFIG);
    assert.equal(await resolveModel(local, opts), local);
    assert.equal(hub.log.length, 0, "a local folder needs no network");

    const commit = await hub.addRepo("org/data", {
      "wikitext-2-raw-v1/test.parquet": "PAR1...PAR1",
    }, { lfs: [] });
    const p = await hubDownloadFile("org/data", "wikitext-2-raw-v1/test.parquet", {
      ...opts,
      repoType: "dataset",
    });
    assert.equal(
      p,
      `${cache}/datasets--org--data/snapshots/${commit}/wikitext-2-raw-v1/test.parquet`,
    );
    assert.equal(await Deno.readTextFile(p), "PAR1...PAR1");
    assert.ok((await Deno.readLink(p)).startsWith("../../../blobs/"));
    assert.ok(
      hub.log.some((l) =>
        l.path === "/datasets/org/data/resolve/main/wikitext-2-raw-v1/test.parquet"
      ),
    );
    assert.equal(
      await hubDownloadFile("org/data", "wikitext-2-raw-v1/test.parquet", {
        ...opts,
        repoType: "dataset",
        offline: true,
      }),
      p,
    );
    await assert.rejects(
      () => hubDownloadFile("org/data", "../etc/passwd", { ...opts, repoType: "dataset" }),
      /invalid file name/,
    );
    const listing = await listRepoFiles("org/data", { ...opts, repoType: "dataset" });
    assert.deepEqual(listing, { sha: commit, files: ["wikitext-2-raw-v1/test.parquet"] });
  });
});

Deno.test("hub: a download locked by another process is waited for; a stale lock is taken over", async () => {
  await withHub(async (hub, cache, opts) => {
    const weights = await weightsFile(cache, 1000);
    await hub.addRepo("org/locked", { "config.json": TINY_CONFIG, "model.safetensors": weights });
    const etag = hub.repos.get("org/locked")!.files.get("model.safetensors")!.etag;
    const blobs = `${cache}/models--org--locked/blobs`;
    await Deno.mkdir(blobs, { recursive: true });
    await Deno.writeTextFile(`${blobs}/${etag}.lock`, "");
    const messages: string[] = [];
    const pending = resolveModel("org/locked", { ...opts, onProgress: (m) => messages.push(m) });
    await new Promise((ok) => setTimeout(ok, 400));
    await Deno.writeFile(`${blobs}/${etag}`, weights); // the "other process" finishes
    await Deno.remove(`${blobs}/${etag}.lock`);
    const dir = await pending;
    assert.deepEqual(await Deno.readFile(`${dir}/model.safetensors`), weights);
    assert.equal(hub.log.filter((l) => l.server === "cdn").length, 0, "not downloaded twice");
    assert.ok(messages.some((m) => m.includes("another process")), messages.join("\n"));

    const w2 = await weightsFile(cache, 999);
    await hub.addRepo("org/stale", { "config.json": TINY_CONFIG, "model.safetensors": w2 });
    const etag2 = hub.repos.get("org/stale")!.files.get("model.safetensors")!.etag;
    const blobs2 = `${cache}/models--org--stale/blobs`;
    await Deno.mkdir(blobs2, { recursive: true });
    await Deno.writeTextFile(`${blobs2}/${etag2}.lock`, "");
    const old = new Date(Date.now() - 10 * 60_000);
    await Deno.utime(`${blobs2}/${etag2}.lock`, old, old);
    const dir2 = await resolveModel("org/stale", opts);
    assert.deepEqual(await Deno.readFile(`${dir2}/model.safetensors`), w2);
    assert.deepEqual(
      [...Deno.readDirSync(blobs2)].map((e) => e.name).filter((n) => n.includes(".lock")),
      [],
    );
  });
});

Deno.test("hub: environment variables — HF_HUB_CACHE, HF_HOME, token file, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE", async () => {
  const names = [
    "HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
  ];
  const saved = new Map(names.map((n) => [n, Deno.env.get(n)]));
  const home = await Deno.makeTempDir();
  try {
    for (const n of names) Deno.env.delete(n);
    Deno.env.set("HOME", home);
    Deno.env.set("HF_HOME", `${home}/hf`);
    await Deno.mkdir(`${home}/hf`);
    assert.equal(hubCacheDir(), `${home}/hf/hub`);
    assert.equal(await hubToken(), null);
    await Deno.mkdir(`${home}/.huggingface`);
    await Deno.writeTextFile(`${home}/.huggingface/token`, "hf_old_location");
    assert.equal(await hubToken(), "hf_old_location");
    await Deno.writeTextFile(`${home}/hf/token`, "hf_fromfile\n");
    assert.equal(await hubToken(), "hf_fromfile");
    Deno.env.set("HF_TOKEN", "hf_fromenv");
    assert.equal(await hubToken(), "hf_fromenv");
    Deno.env.set("HF_HUB_CACHE", `${home}/elsewhere`);
    assert.equal(hubCacheDir(), `${home}/elsewhere`);

    await withHub(async (hub) => {
      await hub.addRepo("org/env", {
        "config.json": TINY_CONFIG,
        "model.safetensors": await weightsFile(home, 10),
      });
      Deno.env.set("HF_ENDPOINT", hub.endpoint);
      Deno.env.set("HF_TOKEN", "hf_env_token");
      const dir = await resolveModel("org/env");
      assert.ok(dir.startsWith(`${home}/elsewhere/models--org--env/snapshots/`));
      assert.ok(
        hub.log.filter((l) => l.server === "hub").every((l) => l.auth === "Bearer hf_env_token"),
      );
      Deno.env.set("HF_HUB_OFFLINE", "1");
      const n = hub.log.length;
      assert.equal(await resolveModel("org/env"), dir);
      assert.equal(hub.log.length, n, "HF_HUB_OFFLINE=1 makes no request");
    });
  } finally {
    for (const [n, v] of saved) v === undefined ? Deno.env.delete(n) : Deno.env.set(n, v);
    await Deno.remove(home, { recursive: true });
  }
});
