/**
 * A minimal parquet writer for tests: one REQUIRED UTF-8 string column, one row group, one PLAIN
 * data page (v1), uncompressed or GZIP, metadata in Thrift's compact protocol. Written from the
 * format specification (parquet-format's parquet.thrift) so that the dataset loader is tested on
 * a file that npm hyparquet did not write itself.
 */

class Compact {
  bytes: number[] = [];
  #last: number[] = [0];
  varint(n: bigint): void {
    while (n >= 0x80n) {
      this.bytes.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.bytes.push(Number(n));
  }
  zigzag(n: number | bigint): void {
    const v = BigInt(n);
    this.varint(v >= 0n ? v << 1n : ((-v) << 1n) - 1n);
  }
  field(id: number, type: number): void {
    const delta = id - this.#last[this.#last.length - 1];
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(id);
    }
    this.#last[this.#last.length - 1] = id;
  }
  i32(id: number, v: number): void {
    this.field(id, 5);
    this.zigzag(v);
  }
  i64(id: number, v: number): void {
    this.field(id, 6);
    this.zigzag(v);
  }
  binary(id: number | null, s: string | Uint8Array): void {
    if (id !== null) this.field(id, 8);
    const b = typeof s === "string" ? new TextEncoder().encode(s) : s;
    this.varint(BigInt(b.length));
    this.bytes.push(...b);
  }
  list(id: number, elemType: number, n: number): void {
    this.field(id, 9);
    if (n < 15) this.bytes.push((n << 4) | elemType);
    else {
      this.bytes.push(0xf0 | elemType);
      this.varint(BigInt(n));
    }
  }
  begin(id: number | null): void {
    if (id !== null) this.field(id, 12);
    this.#last.push(0);
  }
  end(): void {
    this.bytes.push(0);
    this.#last.pop();
  }
}

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Bytes of a parquet file with one string column `column` holding `rows`. */
export async function writeStringParquet(
  column: string,
  rows: string[],
  codec: "none" | "gzip" = "none",
): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const plain: number[] = [];
  for (const r of rows) {
    const b = enc.encode(r);
    plain.push(
      b.length & 255,
      (b.length >> 8) & 255,
      (b.length >> 16) & 255,
      b.length >>> 24,
      ...b,
    );
  }
  const raw = new Uint8Array(plain);
  const body = codec === "gzip" ? await gzip(raw) : raw;

  const page = new Compact();
  page.begin(null);
  page.i32(1, 0); // DATA_PAGE
  page.i32(2, raw.length);
  page.i32(3, body.length);
  page.begin(5); // DataPageHeader
  page.i32(1, rows.length);
  page.i32(2, 0); // PLAIN
  page.i32(3, 3); // RLE
  page.i32(4, 3);
  page.end();
  page.end();

  const dataOffset = 4;
  const chunkSize = page.bytes.length + body.length;
  const meta = new Compact();
  meta.begin(null);
  meta.i32(1, 1);
  meta.list(2, 12, 2);
  meta.begin(null); // root
  meta.binary(4, "schema");
  meta.i32(5, 1);
  meta.end();
  meta.begin(null); // the column
  meta.i32(1, 6); // BYTE_ARRAY
  meta.i32(3, 0); // REQUIRED
  meta.binary(4, column);
  meta.i32(6, 0); // UTF8
  meta.end();
  meta.i64(3, rows.length);
  meta.list(4, 12, 1);
  meta.begin(null); // RowGroup
  meta.list(1, 12, 1);
  meta.begin(null); // ColumnChunk
  meta.i64(2, dataOffset);
  meta.begin(3); // ColumnMetaData
  meta.i32(1, 6);
  meta.list(2, 5, 1);
  meta.zigzag(0);
  meta.list(3, 8, 1);
  meta.binary(null, column);
  meta.i32(4, codec === "gzip" ? 2 : 0);
  meta.i64(5, rows.length);
  meta.i64(6, page.bytes.length + raw.length);
  meta.i64(7, chunkSize);
  meta.i64(9, dataOffset);
  meta.end();
  meta.end();
  meta.i64(2, chunkSize);
  meta.i64(3, rows.length);
  meta.end();
  meta.end();

  const magic = enc.encode("PAR1");
  const m = meta.bytes.length;
  return new Uint8Array([
    ...magic,
    ...page.bytes,
    ...body,
    ...meta.bytes,
    m & 255,
    (m >> 8) & 255,
    (m >> 16) & 255,
    m >>> 24,
    ...magic,
  ]);
}
