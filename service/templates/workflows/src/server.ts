import type { AddressInfo } from "node:net";
import { join } from "node:path";
import express, { type NextFunction, type Request, type Response } from "express";
import { createPool } from "./db";
import { Engine, loadWorkflow } from "./engine";
import { executionsRouter } from "./executions";

const engine = new Engine(loadWorkflow(join(__dirname, "..", "data", "workflow.json")));
const pool = createPool();
const app = express();
app.use(express.json({ limit: "1mb" }));
app.use("/assets", express.static(join(__dirname, "..", "data", "assets")));
app.get("/healthz", (_req: Request, res: Response) => {
  res.json({ status: "ok" });
});
app.use(executionsRouter(pool, engine));
app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
  console.error(err);
  res.status(500).json({ error: "internal error" });
});

const server = app.listen(Number(process.env.PORT ?? "3000"), () => {
  const { port } = server.address() as AddressInfo;
  console.log(`listening on port ${port}`);
});

process.on("SIGTERM", () => {
  server.close(() => {
    void pool.end();
  });
});
