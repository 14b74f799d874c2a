// Loads the exported CSV into its table with COPY, once: a table that has rows is left alone.
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { from as copyFrom } from "pg-copy-streams";
import { createPool } from "./db";

const CSV_PATH = join(__dirname, "..", {{ csv_path | ts_string }});
const EXISTS_SQL = {{ exists_sql | ts_string }};
const COPY_SQL = {{ copy_sql | ts_string }};
const AFTER_SQL = {{ after_sql | ts_string }};

async function main(): Promise<void> {
  const pool = createPool();
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const existing = await client.query<{ loaded: boolean }>(EXISTS_SQL);
    if (existing.rows[0]?.loaded) {
      await client.query("ROLLBACK");
      console.log("data already loaded; nothing to do");
      return;
    }
    const copy = client.query(copyFrom(COPY_SQL));
    await pipeline(createReadStream(CSV_PATH), copy);
    if (AFTER_SQL) {
      await client.query(AFTER_SQL);
    }
    await client.query("COMMIT");
    console.log(`loaded ${copy.rowCount ?? 0} rows`);
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.release();
    await pool.end();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
