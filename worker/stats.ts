// A node's counters (/v1/cluster "gossip" and "refused"): counted in memory, persisted by
// flush() once per round and on status reads, so counting costs no SQL statement on the
// hot paths.
export class Stats {
  private readonly pending = new Map<string, number>();
  /** SQL rows the last all() read (a report's cost, for the benchmark). */
  lastRowsRead = 0;

  constructor(private readonly sql: any) {}

  add(name: string, delta: number): void {
    if (delta === 0) return;
    this.pending.set(name, (this.pending.get(name) ?? 0) + delta);
  }

  /** A core step's StepReply.stats. */
  addAll(stats: { name: string; delta: bigint }[]): void {
    for (const s of stats) this.add(s.name, Number(s.delta));
  }

  /** Forgets the counters not yet flushed (the node's storage was wiped). */
  clear(): void {
    this.pending.clear();
  }

  flush(): void {
    for (const [name, delta] of this.pending) {
      this.sql.exec(`INSERT INTO stats(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value`, name, delta);
    }
    this.pending.clear();
  }

  get(name: string): number {
    const rows = this.sql.exec(`SELECT value FROM stats WHERE name = ?`, name).toArray();
    return (rows.length > 0 ? Number(rows[0].value) : 0) + (this.pending.get(name) ?? 0);
  }

  /** Every counter with its value (a report's facts), pending ones included. */
  all(): { name: string; value: bigint }[] {
    const values = new Map<string, number>();
    const cursor = this.sql.exec(`SELECT name, value FROM stats`);
    for (const row of cursor) values.set(String(row.name), Number(row.value));
    this.lastRowsRead = cursor.rowsRead;
    for (const [name, delta] of this.pending) values.set(name, (values.get(name) ?? 0) + delta);
    return [...values].map(([name, value]) => ({ name, value: BigInt(value) }));
  }

  /** The refused_<reason> counters, as {"<reason>": n}. */
  refused(): Record<string, number> {
    this.flush();
    const out: Record<string, number> = {};
    for (const row of this.sql.exec(`SELECT name, value FROM stats WHERE name LIKE 'refused\\_%' ESCAPE '\\'`)) {
      out[String(row.name).slice("refused_".length)] = Number(row.value);
    }
    return out;
  }

  /** Release 1 counted refused protocol versions as refused_versions. */
  migrate(): void {
    this.sql.exec(`INSERT INTO stats(name, value) SELECT 'refused_protocol_version', value FROM stats WHERE name = 'refused_versions'
      ON CONFLICT(name) DO UPDATE SET value = value + excluded.value`);
    this.sql.exec(`DELETE FROM stats WHERE name = 'refused_versions'`);
  }
}
