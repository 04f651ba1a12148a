/**
 * Hugging Face Hub client and cache: turns `org/name` into a local model folder, in the
 * standard cache layout that Python tools share
 * (`<cache>/models--org--name/{blobs/<etag>, snapshots/<commit>/<file> → ../../blobs/<etag>,
 * refs/<revision>}`), so files they downloaded are reused and ours are reused by them.
 *
 * Environment, as in `huggingface_hub`: `HF_HUB_CACHE`, `HF_HOME`, `HF_TOKEN` (or the token file
 * `$HF_HOME/token`), `HF_ENDPOINT`, `HF_HUB_OFFLINE=1`. Downloads resume from
 * `blobs/<etag>.incomplete` with a Range request.
 *
 * @module
 */

/**
 * An error talking to the Hub or using its cache; the message says what to do.
 *
 * @example Usage
 * ```ts
 * import assert from "node:assert/strict";
 * import { HubError } from "@llm-surgeon/toolkit";
 * const err = new HubError("facebook/opt-9b: repository not found (check the id)", 404);
 * assert.equal(err.status, 404);
 * assert.equal(err.name, "HubError");
 * ```
 */
export class HubError extends Error {
  /** HTTP status, when the error came from a response. */
  readonly status: number | null;
  /**
   * Creates the error.
   * @param message what went wrong and what to do
   * @param status HTTP status, if any
   */
  constructor(message: string, status: number | null = null) {
    super(message);
    this.name = "HubError";
    this.status = status;
  }
}

/**
 * Options of {@link resolveModel} and {@link hubDownloadFile}.
 *
 * @example Usage
 * ```ts ignore
 * import { type HubOptions, resolveModel } from "@llm-surgeon/toolkit";
 * // Only the config and the tokenizer, from a pinned revision.
 * const opts: HubOptions = {
 *   revision: "main",
 *   allowPatterns: ["config.json", "tokenizer*", "*.txt"],
 *   onProgress: (line) => console.error(line),
 * };
 * const dir = await resolveModel("facebook/opt-125m", opts);
 * ```
 */
export interface HubOptions {
  /** Branch, tag or commit (default `main`). */
  revision?: string;
  /** Access token (default: `HF_TOKEN`, then the token file). */
  token?: string | null;
  /** Use only the cache (default: `HF_HUB_OFFLINE`). */
  offline?: boolean;
  /** Hub URL (default: `HF_ENDPOINT`, then https://huggingface.co). */
  endpoint?: string;
  /** Cache folder (default: `HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`). */
  cacheDir?: string;
  /** Repository kind (default `model`). */
  repoType?: "model" | "dataset";
  /**
   * Files to fetch in {@link resolveModel}, as globs (`*` matches within a path segment,
   * `**` across); default: config, generation config, tokenizer files and safetensors weights.
   */
  allowPatterns?: (string | RegExp)[];
  /** Progress lines (default: none). */
  onProgress?: (msg: string) => void;
}

/** Tokenizer files of a model folder (fetched by {@link resolveModel}, copied when saving). */
export const TOKENIZER_FILES: readonly string[] = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "tokenizer.model",
  "chat_template.jinja",
];

/** Files {@link resolveModel} fetches besides the weights, when the repository has them. */
export const MODEL_SIDE_FILES: readonly string[] = [
  "config.json",
  "generation_config.json",
  ...TOKENIZER_FILES,
];

const DEFAULT_ENDPOINT = "https://huggingface.co";
const COMMIT_RE = /^[0-9a-f]{40}$/;
const REPO_ID_RE = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;

function env(name: string): string | undefined {
  try {
    const v = Deno.env.get(name);
    return v === "" ? undefined : v;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

function homeDir(): string {
  return env("HOME") ?? env("USERPROFILE") ?? ".";
}

function hfHome(): string {
  return env("HF_HOME") ?? `${env("XDG_CACHE_HOME") ?? `${homeDir()}/.cache`}/huggingface`;
}

/**
 * The Hub cache folder: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
 *
 * @example
 * ```ts
 * console.log(hubCacheDir()); // e.g. /home/me/.cache/huggingface/hub
 * ```
 */
export function hubCacheDir(): string {
  return env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE") ?? `${hfHome()}/hub`;
}

/**
 * The access token: `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, `$HF_HOME/token`) that
 * `huggingface-cli login` writes, else the old `~/.huggingface/token`; null when there is none.
 *
 * @example
 * ```ts
 * const token = await hubToken();
 * ```
 */
export async function hubToken(): Promise<string | null> {
  const fromEnv = env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN");
  if (fromEnv) return fromEnv.trim();
  const files = [env("HF_TOKEN_PATH") ?? `${hfHome()}/token`, `${homeDir()}/.huggingface/token`];
  for (const file of files) {
    try {
      const t = (await Deno.readTextFile(file)).trim();
      if (t !== "") return t;
    } catch { /* no token file there */ }
  }
  return null;
}

/** Whether `HF_HUB_OFFLINE` asks for offline mode. */
function offlineFromEnv(): boolean {
  return ["1", "true", "yes", "on"].includes((env("HF_HUB_OFFLINE") ?? "").toLowerCase());
}

interface Resolved {
  endpoint: string;
  cache: string;
  repoDir: string;
  revision: string;
  token: string | null;
  offline: boolean;
  repoType: "model" | "dataset";
  progress: (msg: string) => void;
}

async function resolveOptions(repo: string, opts: HubOptions): Promise<Resolved> {
  if (!REPO_ID_RE.test(repo) || repo.includes("..")) {
    throw new HubError(`"${repo}" is not a Hub repository id (expected org/name)`);
  }
  const repoType = opts.repoType ?? "model";
  const cache = opts.cacheDir ?? hubCacheDir();
  return {
    endpoint: (opts.endpoint ?? env("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, ""),
    cache,
    repoDir: `${cache}/${repoType}s--${repo.replaceAll("/", "--")}`,
    revision: opts.revision ?? "main",
    token: opts.token !== undefined ? opts.token : await hubToken(),
    offline: opts.offline ?? offlineFromEnv(),
    repoType,
    progress: opts.onProgress ?? (() => {}),
  };
}

function encodePath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

function resolveUrl(r: Resolved, repo: string, revision: string, file: string): string {
  const prefix = r.repoType === "dataset" ? "datasets/" : "";
  return `${r.endpoint}/${prefix}${repo}/resolve/${encodeURIComponent(revision)}/${
    encodePath(file)
  }`;
}

function authHeaders(r: Resolved): Record<string, string> {
  return r.token ? { authorization: `Bearer ${r.token}` } : {};
}

function offlineHint(repo: string): string {
  return `to work without network, copy the model folder (config.json, *.safetensors, tokenizer ` +
    `files) to this machine and pass its path instead of "${repo}", or set HF_HUB_OFFLINE=1 to use ` +
    `files already in the Hugging Face cache`;
}

/** fetch with errors that name the URL and say how to work offline. */
async function hubFetch(
  repo: string,
  url: string,
  init: RequestInit,
): Promise<Response> {
  for (let attempt = 0;; attempt++) {
    let res: Response;
    try {
      res = await fetch(url, init);
    } catch (e) {
      throw new HubError(`cannot reach ${url}: ${(e as Error).message}; ${offlineHint(repo)}`);
    }
    // Busy or briefly failing server: retry twice after a short pause.
    if ((res.status === 429 || res.status >= 500) && attempt < RETRY_DELAYS_MS.length) {
      await res.body?.cancel().catch(() => {});
      await new Promise((ok) => setTimeout(ok, RETRY_DELAYS_MS[attempt]));
      continue;
    }
    return res;
  }
}

/** Pauses before retrying a request answered with 429 or 5xx. */
const RETRY_DELAYS_MS = [500, 2000];

/** Turns an error response into a HubError that says what to do. */
async function statusError(
  r: Resolved,
  repo: string,
  what: string,
  res: Response,
): Promise<HubError> {
  const code = res.headers.get("x-error-code") ?? "";
  const serverMsg = res.headers.get("x-error-message") ?? "";
  await res.body?.cancel().catch(() => {});
  const page = `${r.endpoint}/${r.repoType === "dataset" ? "datasets/" : ""}${repo}`;
  let msg: string;
  if (res.status === 401 || (res.status === 403 && code.startsWith("Gated"))) {
    msg = r.token
      ? `access to ${repo} was refused with your token: the repository is gated or private; ` +
        `request access on ${page} and make sure the token has read access`
      : `${repo} requires authentication (gated or private repository): accept its license on ` +
        `${page}, then set HF_TOKEN or run \`huggingface-cli login\``;
  } else if (res.status === 403) {
    msg = `access to ${repo} is forbidden: request access on ${page}`;
  } else if (res.status === 404) {
    msg = code === "RevisionNotFound"
      ? `revision "${r.revision}" of ${repo} not found`
      : code === "EntryNotFound"
      ? `${what} not found in ${repo} at revision "${r.revision}"`
      : `${repo} not found on ${r.endpoint} (check the id; a private repository also needs HF_TOKEN)`;
  } else {
    msg = `${what}: HTTP ${res.status} ${res.statusText} from ${r.endpoint}`;
  }
  return new HubError(`${msg}${serverMsg ? ` (server: ${serverMsg})` : ""}`, res.status);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

async function writeTextAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

/** The commit a revision points to in the cache, or null. */
async function cachedCommit(r: Resolved, revision: string): Promise<string | null> {
  if (COMMIT_RE.test(revision)) return revision;
  try {
    const c = (await Deno.readTextFile(`${r.repoDir}/refs/${revision}`)).trim();
    return COMMIT_RE.test(c) ? c : null;
  } catch {
    return null;
  }
}

async function recordRef(r: Resolved, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const path = `${r.repoDir}/refs/${revision}`;
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  if ((await Deno.readTextFile(path).catch(() => "")).trim() !== commit) {
    await writeTextAtomic(path, commit);
  }
}

/** Points `snapshots/<commit>/<file>` at `blobs/<etag>` (relative symlink; a copy if links fail). */
async function linkSnapshot(
  r: Resolved,
  commit: string,
  file: string,
  etag: string,
): Promise<string> {
  const target = `${r.repoDir}/snapshots/${commit}/${file}`;
  await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
  const depth = file.split("/").length - 1;
  const rel = `${"../".repeat(2 + depth)}blobs/${etag}`;
  try {
    const existing = await Deno.readLink(target);
    if (existing === rel) return target;
    await Deno.remove(target);
  } catch {
    await Deno.remove(target).catch(() => {});
  }
  try {
    await Deno.symlink(rel, target);
  } catch {
    await Deno.copyFile(`${r.repoDir}/blobs/${etag}`, target);
  }
  return target;
}

function normaliseEtag(v: string | null): string | null {
  if (!v) return null;
  const e = v.replace(/^W\//, "").replace(/^"|"$/g, "");
  return /^[\w.-]+$/.test(e) ? e : null;
}

function fmtMB(n: number): string {
  return (n / 1e6).toFixed(1);
}

/** Downloads `url` into `blob` via `blob.incomplete`, resuming with Range requests. */
async function downloadBlob(
  r: Resolved,
  repo: string,
  file: string,
  url: string,
  blob: string,
  expectedSize: number | null,
): Promise<void> {
  const part = `${blob}.incomplete`;
  const maxAttempts = 4;
  let lastError: unknown = null;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    let have = -1; // -1: no partial file yet
    try {
      have = (await Deno.stat(part)).size;
    } catch { /* fresh download */ }
    if (expectedSize !== null && have > expectedSize) {
      await Deno.remove(part);
      have = -1;
    }
    if (expectedSize !== null && have === expectedSize) break;
    have = Math.max(have, 0);
    // The token goes to the Hub only, never to a CDN on another host.
    const sameHost = new URL(url).origin === new URL(r.endpoint).origin;
    const headers: Record<string, string> = {
      ...(sameHost ? authHeaders(r) : {}),
      "accept-encoding": "identity", // byte offsets must be those of the file itself
    };
    if (have > 0) headers.range = `bytes=${have}-`;
    const res = await hubFetch(repo, url, { headers });
    if (res.status === 416 && have > 0) {
      await res.body?.cancel();
      if (expectedSize === null) break; // the server has nothing beyond what we have
      await Deno.remove(part);
      continue;
    }
    if (res.status !== 200 && res.status !== 206) throw await statusError(r, repo, file, res);
    const append = res.status === 206 && have > 0;
    if (!append) have = 0;
    const total = expectedSize ??
      (Number(res.headers.get("content-length") ?? NaN) + have || null);
    const out = await Deno.open(part, { write: true, create: true, append, truncate: !append });
    let done = have;
    let lastReport = 0;
    const t0 = performance.now();
    try {
      for await (const chunk of res.body ?? []) {
        let w = 0;
        while (w < chunk.length) w += await out.write(chunk.subarray(w));
        done += chunk.length;
        const now = performance.now();
        if (now - lastReport > 500) {
          lastReport = now;
          const rate = (done - have) / Math.max(1e-3, (now - t0) / 1000);
          r.progress(
            `${repo} ${file}: ${fmtMB(done)}${total ? `/${fmtMB(total)}` : ""} MB` +
              `${total ? ` (${((100 * done) / total).toFixed(1)}%)` : ""}, ${fmtMB(rate)} MB/s`,
          );
        }
      }
      lastError = null;
    } catch (e) {
      lastError = e;
      r.progress(
        `${repo} ${file}: interrupted at ${fmtMB(done)} MB (${(e as Error).message}); resuming`,
      );
      continue;
    } finally {
      out.close();
    }
    if (expectedSize === null || done === expectedSize) break;
    if (done > expectedSize) {
      await Deno.remove(part);
      throw new HubError(`${repo} ${file}: got ${done} bytes, expected ${expectedSize}`);
    }
  }
  if (lastError !== null) {
    throw new HubError(
      `${repo} ${file}: download interrupted (${(lastError as Error).message}); run again to ` +
        `resume from ${part}`,
    );
  }
  const size = (await Deno.stat(part)).size;
  if (expectedSize !== null && size !== expectedSize) {
    throw new HubError(
      `${repo} ${file}: download incomplete (${size} of ${expectedSize} bytes); run again to ` +
        `resume from ${part}`,
    );
  }
  await Deno.rename(part, blob);
  r.progress(`${repo} ${file}: ${fmtMB(size)} MB done`);
}

/** A lock whose file was not touched for this long belongs to a dead process. */
export const STALE_LOCK_MS = 30_000;

/**
 * Runs `fn` holding `<blob>.lock`, so that two processes never append to the same
 * `.incomplete` file. The holder touches the lock while it works; a waiter polls until the
 * lock is gone (then the blob is usually there) or stale (then it takes the lock over).
 */
async function withBlobLock(
  r: Resolved,
  repo: string,
  file: string,
  blob: string,
  fn: () => Promise<void>,
): Promise<void> {
  const lock = `${blob}.lock`;
  let told = false;
  for (;;) {
    try {
      (await Deno.open(lock, { write: true, createNew: true })).close();
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    const age = await Deno.stat(lock).then((s) => Date.now() - (s.mtime?.getTime() ?? 0), () => 0);
    if (age > STALE_LOCK_MS) {
      await Deno.remove(lock).catch(() => {});
      continue;
    }
    if (!told) {
      r.progress(`${repo} ${file}: another process is downloading it; waiting`);
      told = true;
    }
    await new Promise((ok) => setTimeout(ok, 200));
  }
  const touch = setInterval(() => {
    const now = new Date();
    Deno.utime(lock, now, now).catch(() => {});
  }, STALE_LOCK_MS / 6);
  try {
    await fn();
  } finally {
    clearInterval(touch);
    await Deno.remove(lock).catch(() => {});
  }
}

/** Metadata of one file at a revision, from a HEAD request on its resolve URL. */
interface FileMeta {
  commit: string;
  etag: string;
  size: number | null;
  url: string;
}

async function headFile(
  r: Resolved,
  repo: string,
  revision: string,
  file: string,
): Promise<FileMeta> {
  let url = resolveUrl(r, repo, revision, file);
  for (let hop = 0; hop < 5; hop++) {
    const res = await hubFetch(repo, url, {
      method: "HEAD",
      headers: { ...authHeaders(r), "accept-encoding": "identity" },
      redirect: "manual",
    });
    await res.body?.cancel().catch(() => {});
    const location = res.headers.get("location");
    const commit = res.headers.get("x-repo-commit");
    const etag = normaliseEtag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, url);
      if (next.origin === new URL(url).origin && !commit) {
        url = next.href; // a renamed repository: follow on the Hub itself
        continue;
      }
      if (!commit || !etag) {
        throw new HubError(`${repo} ${file}: the Hub's answer lacks X-Repo-Commit or ETag`);
      }
      const size = Number(res.headers.get("x-linked-size") ?? NaN);
      return { commit, etag, size: Number.isFinite(size) ? size : null, url: next.href };
    }
    if (res.status !== 200) throw await statusError(r, repo, file, res);
    if (!commit || !etag) {
      throw new HubError(`${repo} ${file}: the Hub's answer lacks X-Repo-Commit or ETag`);
    }
    const size = Number(
      res.headers.get("x-linked-size") ?? res.headers.get("content-length") ?? NaN,
    );
    return { commit, etag, size: Number.isFinite(size) ? size : null, url };
  }
  throw new HubError(`${repo} ${file}: too many redirects`);
}

/**
 * Downloads one file of a Hub repository into the cache (or finds it there) and returns its
 * path in the snapshot folder. Offline, the cached copy for the revision is returned.
 *
 * @param repo `org/name`
 * @param filename path inside the repository
 * @param opts revision, token, endpoint, cache folder, `repoType` (`"dataset"` for datasets)
 * @example Usage
 * ```ts ignore
 * import { hubDownloadFile } from "@llm-surgeon/toolkit";
 * const p = await hubDownloadFile("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet",
 *   { repoType: "dataset" });
 * ```
 */
export async function hubDownloadFile(
  repo: string,
  filename: string,
  opts: HubOptions = {},
): Promise<string> {
  const r = await resolveOptions(repo, opts);
  return await downloadResolved(r, repo, filename, r.revision);
}

async function fromCache(
  r: Resolved,
  file: string,
  revision: string,
): Promise<string | null> {
  const commit = await cachedCommit(r, revision);
  if (!commit) return null;
  const path = `${r.repoDir}/snapshots/${commit}/${file}`;
  return (await isFile(path)) ? path : null;
}

async function downloadResolved(
  r: Resolved,
  repo: string,
  file: string,
  revision: string,
): Promise<string> {
  if (file.split("/").some((s) => s === "" || s === "." || s === "..")) {
    throw new HubError(`${repo}: invalid file name "${file}"`);
  }
  if (r.offline) {
    const cached = await fromCache(r, file, revision);
    if (cached) return cached;
    throw new HubError(
      `${repo} ${file} (revision "${revision}") is not in the cache ${r.cache} and offline mode ` +
        `is on (HF_HUB_OFFLINE); download it once with network, or pass a local folder`,
    );
  }
  let meta: FileMeta;
  try {
    meta = await headFile(r, repo, revision, file);
  } catch (e) {
    if (e instanceof HubError && e.status === null) {
      const cached = await fromCache(r, file, revision);
      if (cached) {
        r.progress(`${repo} ${file}: Hub unreachable, using the cached copy`);
        return cached;
      }
    }
    throw e;
  }
  await Deno.mkdir(`${r.repoDir}/blobs`, { recursive: true });
  const blob = `${r.repoDir}/blobs/${meta.etag}`;
  if (!(await isFile(blob))) {
    await withBlobLock(r, repo, file, blob, async () => {
      if (!(await isFile(blob))) await downloadBlob(r, repo, file, meta.url, blob, meta.size);
    });
  }
  await recordRef(r, revision, meta.commit);
  return await linkSnapshot(r, meta.commit, file, meta.etag);
}

/** File listing of a repository at a revision. */
export interface RepoListing {
  /** The commit the revision resolves to. */
  sha: string;
  /** Paths of every file. */
  files: string[];
}

/**
 * Lists the files of a repository at a revision (`/api/models/{repo}/revision/{revision}`).
 *
 * @param repo `org/name`
 * @param opts revision, token, endpoint, repoType
 * @example Usage
 * ```ts ignore
 * const { sha, files } = await listRepoFiles("facebook/opt-125m");
 * ```
 */
export async function listRepoFiles(repo: string, opts: HubOptions = {}): Promise<RepoListing> {
  const r = await resolveOptions(repo, opts);
  return await listResolved(r, repo);
}

async function listResolved(r: Resolved, repo: string): Promise<RepoListing> {
  const url = `${r.endpoint}/api/${r.repoType}s/${repo}/revision/${encodeURIComponent(r.revision)}`;
  const res = await hubFetch(repo, url, { headers: authHeaders(r) });
  if (res.status !== 200) throw await statusError(r, repo, "file listing", res);
  let body: { sha?: unknown; siblings?: { rfilename?: unknown }[] };
  try {
    body = await res.json();
  } catch (e) {
    throw new HubError(`${url}: invalid JSON (${(e as Error).message})`);
  }
  if (typeof body.sha !== "string" || !COMMIT_RE.test(body.sha) || !Array.isArray(body.siblings)) {
    throw new HubError(`${url}: the answer lacks "sha" or "siblings"`);
  }
  const files = body.siblings.map((s) => s.rfilename).filter((f): f is string =>
    typeof f === "string"
  );
  return { sha: body.sha, files };
}

/** A glob (`*` within a segment, `**` across segments, `?` one character) as a RegExp. */
function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") {
      re += ".*";
      i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** The files of a model repository that the toolkit needs. */
function defaultModelFiles(repo: string, files: string[]): string[] {
  const have = new Set(files);
  const picked = MODEL_SIDE_FILES.filter((f) => have.has(f));
  if (have.has("model.safetensors.index.json")) picked.push("model.safetensors.index.json");
  else if (have.has("model.safetensors")) picked.push("model.safetensors");
  else {
    const st = files.filter((f) => !f.includes("/") && f.endsWith(".safetensors"));
    if (st.length === 1) picked.push(st[0]);
    else if (files.some((f) => f.endsWith(".bin"))) {
      throw new HubError(
        `${repo} has only PyTorch pickle weights (pytorch_model.bin) at this revision; this ` +
          `toolkit reads safetensors only: try a revision with safetensors weights (see the ` +
          `repository's "refs/pr" conversions), or convert with Python: python -c "from ` +
          `transformers import AutoModelForCausalLM as M; M.from_pretrained('${repo}')` +
          `.save_pretrained('out', safe_serialization=True)" and pass the folder "out"`,
      );
    } else throw new HubError(`${repo} has no safetensors weights at this revision`);
  }
  if (!have.has("config.json")) throw new HubError(`${repo} has no config.json at this revision`);
  return picked;
}

function looksLikePath(s: string): boolean {
  return s.startsWith("/") || s.startsWith("./") || s.startsWith("../") || s.startsWith("~") ||
    s === "." || s === ".." || s.includes("\\") || s.split("/").length > 2;
}

/**
 * Resolves a model argument to a local folder: an existing folder is returned as is (after
 * checking it has a config.json); a Hub id (`org/name`) is downloaded into the Hugging Face
 * cache (config, generation config, tokenizer files, safetensors weights incl. shards) and its
 * snapshot folder is returned. Offline (or without network, when the cache has the snapshot),
 * the cached snapshot is used.
 *
 * @param idOrPath local folder or Hub id
 * @param opts revision, token, offline, endpoint, cache folder, file patterns, progress callback
 * @example Usage
 * ```ts ignore
 * import { resolveModel } from "@llm-surgeon/toolkit";
 * const dir = await resolveModel("facebook/opt-125m", { onProgress: (m) => console.error(m) });
 * ```
 */
export async function resolveModel(idOrPath: string, opts: HubOptions = {}): Promise<string> {
  let st: Deno.FileInfo | null = null;
  try {
    st = await Deno.stat(idOrPath);
  } catch { /* not a local path */ }
  if (st) {
    if (!st.isDirectory) throw new HubError(`${idOrPath} is a file, not a model folder`);
    if (!(await isFile(`${idOrPath.replace(/\/+$/, "")}/config.json`))) {
      throw new HubError(`${idOrPath} is not a model folder: it has no config.json`);
    }
    return idOrPath;
  }
  if (looksLikePath(idOrPath) || !REPO_ID_RE.test(idOrPath)) {
    throw new HubError(`${idOrPath}: no such folder (and not a Hub id of the form org/name)`);
  }
  const repo = idOrPath;
  const r = await resolveOptions(repo, { ...opts, repoType: "model" });
  if (r.offline) return await cachedSnapshot(r, repo, true);
  let listing: RepoListing;
  try {
    listing = await listResolved(r, repo);
  } catch (e) {
    if (e instanceof HubError && e.status === null) {
      const dir = await cachedSnapshot(r, repo, false);
      if (dir) {
        r.progress(`${repo}: Hub unreachable, using the cached snapshot ${dir}`);
        return dir;
      }
    }
    throw e;
  }
  let wanted: string[];
  if (opts.allowPatterns && opts.allowPatterns.length > 0) {
    const res = opts.allowPatterns.map((p) => (typeof p === "string" ? globToRegExp(p) : p));
    wanted = listing.files.filter((f) => res.some((re) => re.test(f)));
  } else wanted = defaultModelFiles(repo, listing.files);
  const commit = listing.sha;
  for (const file of wanted) {
    const local = await downloadResolved(r, repo, file, commit);
    if (file === "model.safetensors.index.json") {
      for (const shard of await shardNames(local)) {
        if (!wanted.includes(shard)) await downloadResolved(r, repo, shard, commit);
      }
    }
  }
  await recordRef(r, r.revision, commit);
  return `${r.repoDir}/snapshots/${commit}`;
}

async function shardNames(indexPath: string): Promise<string[]> {
  let index: { weight_map?: Record<string, unknown> };
  try {
    index = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    throw new HubError(`${indexPath}: invalid index (${(e as Error).message})`);
  }
  const shards = new Set<string>();
  for (const v of Object.values(index.weight_map ?? {})) {
    if (typeof v !== "string" || v.includes("/") || v.startsWith(".")) {
      throw new HubError(`${indexPath}: invalid shard name ${JSON.stringify(v)}`);
    }
    shards.add(v);
  }
  return [...shards].sort();
}

async function cachedSnapshot(r: Resolved, repo: string, required: true): Promise<string>;
async function cachedSnapshot(r: Resolved, repo: string, required: false): Promise<string | null>;
async function cachedSnapshot(
  r: Resolved,
  repo: string,
  required: boolean,
): Promise<string | null> {
  const commit = await cachedCommit(r, r.revision);
  const dir = commit ? `${r.repoDir}/snapshots/${commit}` : null;
  if (dir && (await isFile(`${dir}/config.json`))) return dir;
  if (!required) return null;
  throw new HubError(
    `${repo} (revision "${r.revision}") is not in the cache ${r.cache} and offline mode is on ` +
      `(HF_HUB_OFFLINE); download it once with network, or pass a local folder`,
  );
}
