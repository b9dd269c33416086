// A node's SQLite storage: the schema, the rows a core step asks to load (StepReply.load),
// and the writes it hands back (StepReply rows, peers, state), applied in one transaction.
// Mechanics only: what to load and write, and when, is the core's.

export type Msg = Record<string, any>;

// Durable Object SQLite binds at most 100 parameters per statement.
const SQL_PARAMS_MAX = 100; // lint: platform-limit
const EMPTY = new Uint8Array(0);
// A key's digest is kept as two 32-bit halves (dh, dl) so that SQL sums them exactly: a
// range's digest mod 2^64 is ((sum dh + (sum dl >> 32)) mod 2^32) << 32 | (sum dl mod 2^32).
const HALF = 32n; // lint: encoding (64-bit digest halves)
const HALF_MASK = 0xffffffffn; // lint: encoding (64-bit digest halves)
// A key range is cut in 16 parts (RINGKV_AE_PART_BITS bits of position).
const PART_BITS = 4; // lint: abi (RINGKV_AE_PART_BITS)
// Rows given their key position (kh) per statement when a node from an earlier build starts.
const POSITION_BACKFILL_ROWS = 1000; // lint: api-limit (one OP_PLACE call's keys, well below its 16,384)
// FAULTS only: messages a held node keeps for late delivery.
const HELD_MESSAGES_MAX = 4096; // lint: platform-limit (keeps a FAULTS-only table far below a Durable Object's storage)

/** 64-bit values as 16-char lowercase hex, so that SQL text order is numeric order. */
export function hex64(v: bigint): string {
  return BigInt.asUintN(64, v).toString(16).padStart(16, "0"); // lint: encoding
}

export function unhex64(s: string): bigint {
  return BigInt("0x" + s);
}

/** A Uint8Array as an SQL BLOB binding. */
export function blob(u8: Uint8Array): ArrayBuffer {
  if (u8.byteOffset === 0 && u8.byteLength === u8.buffer.byteLength) return u8.buffer as ArrayBuffer;
  return u8.slice().buffer as ArrayBuffer;
}

export function bytesOf(v: unknown): Uint8Array {
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (v instanceof Uint8Array) return v;
  if (v === null || v === undefined) return EMPTY;
  return new Uint8Array(v as ArrayBuffer);
}

/** A map key for key bytes. */
export function keyId(u8: Uint8Array): string {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x4000) s += String.fromCharCode(...u8.subarray(i, i + 0x4000)); // lint: platform-limit
  return s;
}

function digestHalves(d: bigint): [number, number] {
  const v = BigInt.asUintN(64, d); // lint: encoding
  return [Number(v >> HALF), Number(v & HALF_MASK)];
}

/** A KeyInfo as the key row's columns, in the order
 *  live, winner_hlc, winner_node, all_deleted, max_hlc, expired, siblings, digest, kh, dh, dl. */
function infoColumns(info: Msg): unknown[] {
  return [
    info.live ? 1 : 0,
    hex64(info.winnerHlc ?? 0n),
    info.winnerNode ?? 0,
    info.allDeleted ? 1 : 0,
    hex64(info.maxHlc ?? 0n),
    info.expired ? 1 : 0,
    info.siblings ?? 0,
    hex64(info.digest ?? 0n),
    Number(info.position ?? 0n),
    ...digestHalves(info.digest ?? 0n),
  ];
}

export class NodeStorage {
  /** SQL rows the last load's live count read (0 when it asked none). */
  lastCountRowsRead = 0;

  constructor(
    private readonly sql: any,
    private readonly storage: any,
  ) {}

  createSchema(): void {
    const sql = this.sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS config(name TEXT PRIMARY KEY, value TEXT NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS keys(
      key BLOB PRIMARY KEY, shard INTEGER NOT NULL, meta BLOB NOT NULL, seq INTEGER NOT NULL,
      from_client INTEGER NOT NULL, live INTEGER NOT NULL, winner_hlc TEXT NOT NULL,
      winner_node INTEGER NOT NULL, all_deleted INTEGER NOT NULL, max_hlc TEXT NOT NULL,
      expired INTEGER NOT NULL, siblings INTEGER NOT NULL, digest TEXT NOT NULL,
      kh INTEGER, dh INTEGER, dl INTEGER)`);
    // kh: the key's position in its shard (KeyInfo.position), dh/dl: its digest's halves.
    // Added to tables of earlier builds (their rows get them at start: backfillPositions).
    const columns = new Set(sql.exec(`PRAGMA table_info(keys)`).toArray().map((c: any) => c.name));
    for (const c of ["kh", "dh", "dl"]) if (!columns.has(c)) sql.exec(`ALTER TABLE keys ADD COLUMN ${c} INTEGER`);
    // gc_since/gc_epoch: an all-tombstone row's noted collection agreement, or a marker's
    // time of collection (Local.gc_since_ms).
    for (const c of ["gc_since", "gc_epoch"]) if (!columns.has(c)) sql.exec(`ALTER TABLE keys ADD COLUMN ${c} INTEGER NOT NULL DEFAULT 0`);
    // Key ranges below a shard are read by (shard, kh); their parts' digests from the index alone.
    sql.exec(`DROP INDEX IF EXISTS keys_shard`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_range ON keys(shard, kh, expired, dh, dl)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_seq ON keys(seq)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_client_seq ON keys(from_client, seq)`);
    // Collection reads tombstone rows in rowid order, markers by their time, and an earlier
    // release's zero-digest rows: partial indexes, so each holds only those rows.
    sql.exec(`DROP INDEX IF EXISTS keys_expiry`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_tombstones ON keys(all_deleted) WHERE all_deleted = 1 AND siblings > 0`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_markers ON keys(gc_since) WHERE siblings = 0`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_legacy_expired ON keys(expired) WHERE expired = 1`);
    sql.exec(`CREATE TABLE IF NOT EXISTS vals(key BLOB NOT NULL, node INTEGER NOT NULL,
      counter INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY(key, node, counter))`);
    sql.exec(`CREATE TABLE IF NOT EXISTS shard_digests(shard INTEGER PRIMARY KEY, digest TEXT NOT NULL, keys INTEGER)`);
    // keys: the shard's key rows (the core keeps the count; an earlier build's tables get
    // the column, and its counts, at start: backfillPositions).
    const shardColumns = new Set(sql.exec(`PRAGMA table_info(shard_digests)`).toArray().map((c: any) => c.name));
    if (!shardColumns.has("keys")) sql.exec(`ALTER TABLE shard_digests ADD COLUMN keys INTEGER`);
    // An earlier build's shards get their key rows counted once (one pass by the shard
    // index), before the core starts from them; the core keeps the counts from then on.
    if (this.getConf("shard_keys") !== "1") {
      this.storage.transactionSync(() => {
        sql.exec(`UPDATE shard_digests SET keys = 0 WHERE keys IS NULL`);
        sql.exec(
          `INSERT INTO shard_digests(shard, digest, keys) SELECT shard, ?, count(*) FROM keys GROUP BY shard
           ON CONFLICT(shard) DO UPDATE SET keys = excluded.keys`,
          hex64(0n),
        );
        this.setConf("shard_keys", "1");
      });
    }
    sql.exec(`CREATE TABLE IF NOT EXISTS peers(peer INTEGER PRIMARY KEY, acked_seq INTEGER NOT NULL,
      failures INTEGER NOT NULL, retry_at_ms INTEGER NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS stats(name TEXT PRIMARY KEY, value INTEGER NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS step_state(id INTEGER PRIMARY KEY, state BLOB NOT NULL)`);
  }

  getConf(name: string): string | undefined {
    const rows = this.sql.exec(`SELECT value FROM config WHERE name = ?`, name).toArray();
    return rows.length > 0 ? rows[0].value : undefined;
  }

  setConf(name: string, value: string): void {
    this.sql.exec(`INSERT INTO config(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`, name, value);
  }

  // ---------------------------------------------------------------------------------
  // What OP_INIT needs.

  /** The core's persisted StepState, or empty. */
  stepState(): Uint8Array {
    const rows = this.sql.exec(`SELECT state FROM step_state WHERE id = 0`).toArray();
    return rows.length > 0 ? bytesOf(rows[0].state) : EMPTY;
  }

  peerRows(): Msg[] {
    return this.sql
      .exec(`SELECT peer, acked_seq, failures, retry_at_ms FROM peers`)
      .toArray()
      .map((r: any) => ({ peer: r.peer, ackedSeq: BigInt(r.acked_seq), failures: r.failures, retryAtMs: BigInt(r.retry_at_ms) }));
  }

  shardDigests(): Msg[] {
    return this.sql
      .exec(`SELECT shard, digest, keys FROM shard_digests`)
      .toArray()
      .map((r: any) => ({ shard: r.shard, digest: unhex64(r.digest), keys: r.keys ?? 0 }));
  }

  // ---------------------------------------------------------------------------------
  // Loads (the Load message of wasm/ringkv.proto says what each one is).

  load(l: Msg): Msg {
    const out: Msg = { rows: [], shards: [], shardRows: [], changed: [], expirable: [], collectable: [], nextExpiry: 0n, rangesLoaded: 0, rangeRows: [], parts: [], liveKeys: 0n };
    if (l.keys.length > 0) out.rows = this.loadKeys(l.keys, Number(l.rowsBytesMax));
    if (l.shards.length > 0) this.loadShards(l.shards, Number(l.shardBytesMax), out);
    if (l.ranges.length > 0) this.loadRanges(l.ranges, l.rangesRowsMax, Number(l.rangesBytesMax), out);
    if (l.rangeParts.length > 0) out.parts = l.rangeParts.map((r: Msg) => this.rangeParts(r));
    if (l.page) this.loadPage(l, out);
    if (l.changed) out.changed = this.loadChanged(l);
    if (l.expirable > 0) {
      const before = Number(l.expireBefore);
      out.expirable = this.rowsWhere(`siblings = 0 AND gc_since < ? LIMIT ?`, before, l.expirable);
      const left = l.expirable - out.expirable.length;
      if (left > 0) out.expirable.push(...this.rowsWhere(`expired = 1 LIMIT ?`, left));
    }
    if (l.collectable > 0) {
      out.collectable = this.rowsWhere(
        `all_deleted = 1 AND siblings > 0 AND rowid > ? ORDER BY rowid LIMIT ?`,
        Number(l.collectAfter ?? 0n),
        l.collectable,
      );
    }
    if (l.nextExpiry) {
      const row = this.sql.exec(`SELECT min(gc_since) AS m FROM keys WHERE siblings = 0 AND gc_since >= ?`, Number(l.expireBefore)).one();
      if (row.m !== null) out.nextExpiry = BigInt(row.m);
    }
    // Once, for a node persisted by an earlier build: from then on the core keeps the count.
    this.lastCountRowsRead = 0;
    if (l.countLive) {
      const cursor = this.sql.exec(`SELECT count(*) AS n FROM keys WHERE live = 1`);
      out.liveKeys = BigInt(cursor.one().n);
      this.lastCountRowsRead = cursor.rowsRead;
    }
    return out;
  }

  private rowsWhere(where: string, ...params: unknown[]): Msg[] {
    return this.sql
      .exec(`SELECT rowid AS ord, key, meta, expired, gc_since, gc_epoch FROM keys WHERE ${where}`, ...params)
      .toArray()
      .map((r: any) => ({
        key: bytesOf(r.key),
        meta: bytesOf(r.meta),
        expired: r.expired === 1,
        gcSinceMs: BigInt(r.gc_since),
        gcEpoch: BigInt(r.gc_epoch),
        order: BigInt(r.ord),
      }));
  }

  /** Rows of `keys` in order, metadata with value lengths, until the metadata loaded
   *  reaches bytesMax (0: all). */
  private loadKeys(keys: Uint8Array[], bytesMax: number): Msg[] {
    const out: Msg[] = [];
    let bytes = 0;
    for (let i = 0; i < keys.length; i += SQL_PARAMS_MAX) {
      const chunk = keys.slice(i, i + SQL_PARAMS_MAX);
      const marks = chunk.map(() => "?").join(", ");
      const found = new Map<string, Msg>();
      for (const row of this.sql.exec(
        `SELECT key, meta, expired, seq, from_client, gc_since, gc_epoch FROM keys WHERE key IN (${marks})`,
        ...chunk.map(blob),
      )) {
        found.set(keyId(bytesOf(row.key)), {
          meta: bytesOf(row.meta),
          expired: row.expired === 1,
          seq: BigInt(row.seq),
          fromClient: row.from_client === 1,
          gcSinceMs: BigInt(row.gc_since),
          gcEpoch: BigInt(row.gc_epoch),
          sizes: [],
        });
      }
      // Lengths apart (a JOIN would repeat each key's metadata once per value).
      for (const row of this.sql.exec(`SELECT key, node, counter, length(value) AS bytes FROM vals WHERE key IN (${marks})`, ...chunk.map(blob))) {
        found.get(keyId(bytesOf(row.key)))?.sizes.push({ dot: { node: row.node, counter: BigInt(row.counter) }, bytes: BigInt(row.bytes) });
      }
      for (const key of chunk) {
        const row = found.get(keyId(key));
        out.push({ key, ...(row ?? { meta: EMPTY, expired: false, sizes: [] }) });
        bytes += row?.meta.length ?? 0;
        if (bytesMax > 0 && bytes >= bytesMax) return out;
      }
    }
    return out;
  }

  loadValues(key: Uint8Array): Msg[] {
    const values: Msg[] = [];
    for (const row of this.sql.exec(`SELECT node, counter, value FROM vals WHERE key = ?`, blob(key))) {
      values.push({ dot: { node: row.node, counter: BigInt(row.counter) }, value: bytesOf(row.value) });
    }
    return values;
  }

  /** A key row (key, meta, expired, seq, from_client) as a Local with its values, and the
   *  bytes of its metadata and values. */
  private localWithValues(row: any): { local: Msg; bytes: number } {
    const key = bytesOf(row.key);
    const meta = bytesOf(row.meta);
    const values = this.loadValues(key);
    let bytes = meta.length;
    for (const v of values) bytes += v.value.length;
    return { local: { key, meta, expired: row.expired === 1, values, seq: BigInt(row.seq), fromClient: row.from_client === 1 }, bytes };
  }

  private loadShards(shards: number[], bytesMax: number, out: Msg): void {
    let bytes = 0;
    for (const shard of shards) {
      if (bytesMax > 0 && bytes >= bytesMax) break;
      out.shards.push(shard);
      for (const row of this.sql.exec(`SELECT key, meta, expired, seq, from_client FROM keys WHERE shard = ?`, shard).toArray()) {
        const local = this.localWithValues(row);
        bytes += local.bytes;
        out.shardRows.push(local.local);
      }
    }
  }

  /** Rows of key ranges, whole ranges only: a range whose rows would pass rowsMax, or
   *  whose bytes would pass bytesMax (unless it is the first and holds one row), ends the
   *  load, read no further than that (0: no bound). */
  private loadRanges(ranges: Msg[], rowsMax: number, bytesMax: number, out: Msg): void {
    let rows = 0;
    let bytes = 0;
    out.rangesLoaded = 0;
    out.rangeRows = [];
    for (const r of ranges) {
      const lo = Number(r.lo);
      const limit = rowsMax > 0 ? rowsMax - rows + 1 : -1;
      const locals: Msg[] = [];
      let rangeBytes = 0;
      for (const row of this.sql.exec(
        `SELECT key, meta, expired, seq, from_client FROM keys WHERE shard = ? AND kh >= ? AND kh < ? LIMIT ?`,
        r.shard,
        lo,
        lo + 2 ** r.bits,
        limit,
      )) {
        if (rowsMax > 0 && rows + locals.length + 1 > rowsMax) return;
        const local = this.localWithValues(row);
        rangeBytes += local.bytes;
        locals.push(local.local);
        const alone = out.rangesLoaded === 0 && locals.length === 1;
        if (bytesMax > 0 && bytes + rangeBytes > bytesMax && !alone) return;
      }
      rows += locals.length;
      bytes += rangeBytes;
      out.rangeRows.push(...locals);
      out.rangesLoaded++;
    }
  }

  /** A catch-up page: the shard's rows after the cursor (position, key) in key order (by
   *  position, then key bytes), with values: at most pageRowsMax, stopping after the row at
   *  which the bytes loaded reach pageBytesMax; pageMore when a row follows. */
  private loadPage(l: Msg, out: Msg): void {
    const columns = `SELECT key, meta, expired, seq, from_client FROM keys`;
    const position = Number(l.pagePosition);
    const cursor = l.pageStarted
      ? this.sql.exec(
          `${columns} WHERE shard = ? AND kh >= ? AND (kh > ? OR key > ?) ORDER BY kh, key LIMIT ?`,
          l.pageShard,
          position,
          position,
          blob(l.pageKey),
          l.pageRowsMax + 1,
        )
      : this.sql.exec(`${columns} WHERE shard = ? ORDER BY kh, key LIMIT ?`, l.pageShard, l.pageRowsMax + 1);
    const rows: Msg[] = [];
    let bytes = 0;
    let more = false;
    for (const row of cursor) {
      if (rows.length >= l.pageRowsMax || bytes >= Number(l.pageBytesMax)) {
        more = true;
        break;
      }
      const local = this.localWithValues(row);
      bytes += local.bytes;
      rows.push(local.local);
    }
    out.pageRows = rows;
    out.pageMore = more;
  }

  /** A key range's 16 parts: key rows and digest (the sum of the rows' contributions, 0 for
   *  an expired row), from the keys_range index alone. */
  private rangeParts(r: Msg): Msg {
    const lo = Number(r.lo);
    const shift = r.bits - PART_BITS;
    const parts = this.sql
      .exec(
        `SELECT (kh - ?) >> ? AS part, count(*) AS n,
           (sum(CASE WHEN expired = 0 THEN dh ELSE 0 END) + (sum(CASE WHEN expired = 0 THEN dl ELSE 0 END) >> 32)) & 4294967295 AS hi,
           sum(CASE WHEN expired = 0 THEN dl ELSE 0 END) & 4294967295 AS lo
         FROM keys WHERE shard = ? AND kh >= ? AND kh < ? GROUP BY part ORDER BY part`,
        lo,
        shift,
        r.shard,
        lo,
        lo + 2 ** r.bits,
      )
      .toArray();
    let mask = 0;
    const counts: bigint[] = [];
    const digests: bigint[] = [];
    for (const p of parts) {
      mask |= 1 << p.part;
      counts.push(BigInt(p.n));
      digests.push((BigInt(p.hi) << HALF) | BigInt(p.lo));
    }
    return { mask, counts, digests };
  }

  /** Rows stored by an earlier build have no key position: given theirs (the core hashes the
   *  keys), a batch at a time by rowid (each batch commits, so an interrupted start goes
   *  on where it stopped); once done, a config row says so and later starts skip it. */
  backfillPositions(positions: (keys: Uint8Array[]) => bigint[]): number {
    if (this.getConf("positions") === "1") return 0;
    let done = 0;
    let after = 0;
    for (;;) {
      const rows = this.sql
        .exec(`SELECT rowid AS id, key, digest FROM keys WHERE rowid > ? AND kh IS NULL ORDER BY rowid LIMIT ?`, after, POSITION_BACKFILL_ROWS)
        .toArray();
      if (rows.length === 0) break;
      const keys = rows.map((r: any) => bytesOf(r.key));
      const pos = positions(keys);
      this.storage.transactionSync(() => {
        rows.forEach((r: any, i: number) => {
          this.sql.exec(`UPDATE keys SET kh = ?, dh = ?, dl = ? WHERE rowid = ?`, Number(pos[i]), ...digestHalves(unhex64(r.digest)), r.id);
        });
      });
      after = rows[rows.length - 1].id;
      done += rows.length;
    }
    this.setConf("positions", "1");
    return done;
  }

  private loadChanged(l: Msg): Msg[] {
    const rows = this.sql
      .exec(
        `SELECT key, meta, expired, seq, from_client FROM keys WHERE ${l.changedClientOnly ? "from_client = 1 AND " : ""}seq > ? ORDER BY seq LIMIT ?`,
        Number(l.changedAfter),
        l.changedLimit,
      )
      .toArray();
    const out: Msg[] = [];
    let bytes = 0;
    const bytesMax = Number(l.changedBytesMax);
    for (const r of rows) {
      const { local, bytes: rowBytes } = this.localWithValues(r);
      bytes += rowBytes;
      out.push({ local: { key: local.key, meta: local.meta, expired: local.expired, values: local.values }, seq: local.seq, fromClient: local.fromClient });
      if (bytesMax > 0 && bytes >= bytesMax) break;
    }
    return out;
  }

  loadRow(key: Uint8Array): { meta: Uint8Array; expired: boolean } | undefined {
    const rows = this.sql.exec(`SELECT meta, expired FROM keys WHERE key = ?`, blob(key)).toArray();
    if (rows.length === 0) return undefined;
    return { meta: bytesOf(rows[0].meta), expired: rows[0].expired === 1 };
  }

  valueSizes(key: Uint8Array): Msg[] {
    return this.sql
      .exec(`SELECT node, counter, length(value) AS bytes FROM vals WHERE key = ?`, blob(key))
      .toArray()
      .map((r: any) => ({ dot: { node: r.node, counter: BigInt(r.counter) }, bytes: BigInt(r.bytes) }));
  }

  value(key: Uint8Array, dot: Msg): Uint8Array | undefined {
    const rows = this.sql.exec(`SELECT value FROM vals WHERE key = ? AND node = ? AND counter = ?`, blob(key), dot.node, Number(dot.counter)).toArray();
    return rows.length === 0 ? undefined : bytesOf(rows[0].value);
  }

  // ---------------------------------------------------------------------------------
  // Writes: one StepReply in one transaction. Values given by (at, length) lie in
  // `payload`, the payload of the event that began the chain.

  /** Returns the number of key rows written. */
  apply(reply: Msg, payload: Uint8Array): number {
    let written = 0;
    if (reply.rows.length === 0 && reply.peers.length === 0 && reply.state.length === 0) return written;
    this.storage.transactionSync(() => {
      for (const row of reply.rows) {
        written++;
        if (row.applied !== undefined) this.applyRow(row.applied, Number(row.seq), row.fromClient, payload);
        else if (row.mark !== undefined) {
          this.sql.exec(`UPDATE keys SET gc_since = ?, gc_epoch = ? WHERE key = ?`, Number(row.mark.sinceMs), Number(row.mark.epoch), blob(row.mark.key));
        } else this.sql.exec(`UPDATE keys SET seq = ? WHERE key = ?`, Number(row.seq), blob(row.key));
      }
      for (const p of reply.peers) {
        this.sql.exec(
          `INSERT INTO peers(peer, acked_seq, failures, retry_at_ms) VALUES (?, ?, ?, ?)
           ON CONFLICT(peer) DO UPDATE SET acked_seq = excluded.acked_seq, failures = excluded.failures,
             retry_at_ms = excluded.retry_at_ms`,
          p.peer,
          Number(p.ackedSeq),
          p.failures,
          Number(p.retryAtMs),
        );
      }
      if (reply.state.length > 0) {
        this.sql.exec(`INSERT INTO step_state(id, state) VALUES (0, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state`, blob(reply.state));
      }
    });
    return written;
  }

  private applyRow(a: Msg, seq: number, fromClient: boolean, payload: Uint8Array): void {
    const key: Uint8Array = a.key;
    if (a.meta.length === 0) {
      this.sql.exec(`DELETE FROM keys WHERE key = ?`, blob(key));
      this.sql.exec(`DELETE FROM vals WHERE key = ?`, blob(key));
    } else if (seq > 0) {
      this.sql.exec(
        `INSERT INTO keys(key, shard, meta, seq, from_client, live, winner_hlc, winner_node, all_deleted,
           max_hlc, expired, siblings, digest, kh, dh, dl, gc_since, gc_epoch)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
         ON CONFLICT(key) DO UPDATE SET shard = excluded.shard, meta = excluded.meta, seq = excluded.seq,
           from_client = excluded.from_client, live = excluded.live, winner_hlc = excluded.winner_hlc,
           winner_node = excluded.winner_node, all_deleted = excluded.all_deleted, max_hlc = excluded.max_hlc,
           expired = excluded.expired, siblings = excluded.siblings, digest = excluded.digest, kh = excluded.kh,
           dh = excluded.dh, dl = excluded.dl, gc_since = excluded.gc_since, gc_epoch = 0`,
        blob(key),
        a.shard,
        blob(a.meta),
        seq,
        fromClient ? 1 : 0,
        ...infoColumns(a.info ?? {}),
        Number(a.gcSinceMs ?? 0n),
      );
    } else {
      // Expiry and collection keep the row's sequence: they are not news.
      this.sql.exec(
        `UPDATE keys SET meta = ?, live = ?, winner_hlc = ?, winner_node = ?, all_deleted = ?, max_hlc = ?,
           expired = ?, siblings = ?, digest = ?, kh = ?, dh = ?, dl = ?, gc_since = ?, gc_epoch = 0 WHERE key = ?`,
        blob(a.meta),
        ...infoColumns(a.info ?? {}),
        Number(a.gcSinceMs ?? 0n),
        blob(key),
      );
    }
    if (a.meta.length > 0) {
      for (const d of a.dropped) {
        this.sql.exec(`DELETE FROM vals WHERE key = ? AND node = ? AND counter = ?`, blob(key), d.node, Number(d.counter));
      }
      for (const v of a.put) {
        const length = Number(v.length);
        const at = Number(v.at);
        // A value outside the payload is the core's bug: refuse the transaction, never store
        // a truncated value.
        if (length > 0 && at + length > payload.length) throw new Error(`value [${at}, ${at + length}) outside a payload of ${payload.length} bytes`);
        const value = length > 0 ? payload.subarray(at, at + length) : v.value;
        this.sql.exec(`INSERT OR REPLACE INTO vals(key, node, counter, value) VALUES (?, ?, ?, ?)`, blob(key), v.dot.node, Number(v.dot.counter), blob(value));
      }
    }
    if (a.shardDigest === 0n && a.shardKeys === 0) this.sql.exec(`DELETE FROM shard_digests WHERE shard = ?`, a.shard);
    else {
      this.sql.exec(
        `INSERT INTO shard_digests(shard, digest, keys) VALUES (?, ?, ?) ON CONFLICT(shard) DO UPDATE SET digest = excluded.digest, keys = excluded.keys`,
        a.shard,
        hex64(a.shardDigest),
        a.shardKeys,
      );
    }
  }

  /** FAULTS only (the benchmark's seeding): `count` key rows numbered from `from`, inserted
   *  directly with one metadata for all and no value rows, outside the core: no digest,
   *  count or sequence includes them, so they are inert stored keys (no round, report or
   *  anti-entropy exchange reads them). */
  bulkInsert(prefix: string, from: number, count: number, shards: number, meta: Uint8Array): number {
    const zero = hex64(0n);
    const cursor = this.sql.exec(
      `WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
       INSERT OR IGNORE INTO keys(key, shard, meta, seq, from_client, live, winner_hlc, winner_node, all_deleted,
         max_hlc, expired, siblings, digest)
       SELECT CAST(? || printf('%09d', i) AS BLOB), i % ?, ?, 0, 0, 1, ?, 0, 0, ?, 0, 1, ? FROM n`,
      from,
      from + count,
      prefix,
      shards,
      blob(meta),
      zero,
      zero,
      zero,
    );
    cursor.toArray();
    return cursor.rowsWritten;
  }

  // ---------------------------------------------------------------------------------
  // FAULTS only: messages a held node kept instead of sending (delivered late on request).

  private heldTable(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS held(n INTEGER PRIMARY KEY AUTOINCREMENT, peer INTEGER NOT NULL,
      path TEXT NOT NULL, body BLOB NOT NULL)`);
  }

  /** Keeps a message, up to HELD_MESSAGES_MAX (later ones are only lost). */
  holdMessage(peer: number, path: string, body: Uint8Array): void {
    this.heldTable();
    if (this.sql.exec(`SELECT count(*) AS n FROM held`).one().n >= HELD_MESSAGES_MAX) return;
    this.sql.exec(`INSERT INTO held(peer, path, body) VALUES (?, ?, ?)`, peer, path, blob(body));
  }

  heldMessages(): { peer: number; path: string; body: Uint8Array }[] {
    this.heldTable();
    return this.sql
      .exec(`SELECT peer, path, body FROM held ORDER BY n`)
      .toArray()
      .map((r: any) => ({ peer: r.peer, path: r.path, body: bytesOf(r.body) }));
  }

  clearHeld(): void {
    this.heldTable();
    this.sql.exec(`DELETE FROM held`);
  }

  /** Held messages by channel path. */
  heldCounts(): Record<string, number> {
    this.heldTable();
    const out: Record<string, number> = {};
    for (const r of this.sql.exec(`SELECT path, count(*) AS n FROM held GROUP BY path`)) out[r.path] = r.n;
    return out;
  }

  /** The database's size in bytes (a report's fact). */
  databaseBytes(): number {
    return Number(this.sql.databaseSize ?? 0);
  }
}
