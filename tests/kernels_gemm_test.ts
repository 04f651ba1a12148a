import { matmul, Tensor } from "../kernels/mod.ts";
import { assertClose, matmulRef, Rng } from "./_util.ts";

Deno.test("matmul() matches a float64 reference for every transpose on odd shapes", async () => {
  const rng = new Rng(7);
  for (const [M, N, K] of [[1, 1, 1], [3, 17, 5], [17, 3, 100], [100, 257, 33]]) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        const a = rng.normals(M * K), b = rng.normals(K * N);
        const A = await Tensor.from(Float32Array.from(a), ta ? [K, M] : [M, K]);
        const B = await Tensor.from(Float32Array.from(b), tb ? [N, K] : [K, N]);
        const C = matmul(A, B, { transA: ta, transB: tb });
        assertClose(await C.read(), matmulRef(a, b, M, N, K, ta, tb), 1e-4, 1e-4, `C ${M}x${N}x${K} ${ta}${tb}`);
        A.dispose(); B.dispose(); C.dispose();
      }
    }
  }
});
