import { Pool } from "pg";

export function databaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) {
    throw new Error("DATABASE_URL is not set (copy .env.example to .env)");
  }
  return url;
}

export function createPool(): Pool {
  return new Pool({ connectionString: databaseUrl() });
}
