// Applies db/migrations/*.up.sql in name order, each once, each in its own transaction.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createPool } from "./db";

const MIGRATIONS_DIR = join(__dirname, "..", "db", "migrations");
// Two replicas starting together must not both apply the same migration.
const LOCK_ID = 72640411;

async function main(): Promise<void> {
  const pool = createPool();
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [LOCK_ID]);
    await client.query(
      "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    const applied = await client.query<{ name: string }>("SELECT name FROM schema_migrations");
    const done = new Set(applied.rows.map((row) => row.name));
    const files = readdirSync(MIGRATIONS_DIR)
      .filter((name) => name.endsWith(".up.sql"))
      .sort();
    for (const file of files) {
      if (done.has(file)) {
        continue;
      }
      await client.query("BEGIN");
      try {
        await client.query(readFileSync(join(MIGRATIONS_DIR, file), "utf8"));
        await client.query("INSERT INTO schema_migrations (name) VALUES ($1)", [file]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        throw err;
      }
      console.log(`applied ${file}`);
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [LOCK_ID]);
    client.release();
    await pool.end();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
