// HTTP API of the workflow: its definition, executions (keyset pages), start, send events.
import { Router, type Request, type Response } from "express";
import type { Pool } from "pg";
import type { Engine } from "./engine";

interface ExecutionRow {
  execution_id: string;
  external_id: string | null;
  status: string;
  current_state: string | null;
  started_at: Date | null;
  finished_at: Date | null;
  input: unknown;
  history: unknown;
  recorded_at: Date;
}

const COLUMNS =
  "execution_id, external_id, status, current_state, started_at, finished_at, input, history, recorded_at";

function validId(id: string): boolean {
  return /^\d{1,18}$/.test(id);
}

export function executionsRouter(pool: Pool, engine: Engine): Router {
  const router = Router();

  router.get("/workflow", (_req: Request, res: Response) => {
    res.json(engine.workflow);
  });

  router.get("/executions", async (req: Request, res: Response) => {
    const after = typeof req.query.after === "string" && validId(req.query.after) ? req.query.after : "0";
    const limit = Math.min(Math.max(Number(req.query.limit ?? 50) || 50, 1), 500);
    const result = await pool.query<ExecutionRow>(
      `SELECT ${COLUMNS} FROM workflow_executions WHERE execution_id > $1 ORDER BY execution_id LIMIT $2`,
      [after, limit],
    );
    const last = result.rows[result.rows.length - 1];
    res.json({ items: result.rows, next_after: result.rows.length === limit && last ? last.execution_id : null });
  });

  router.get("/executions/:id", async (req: Request, res: Response) => {
    const id = String(req.params.id);
    const result = validId(id)
      ? await pool.query<ExecutionRow>(`SELECT ${COLUMNS} FROM workflow_executions WHERE execution_id = $1`, [id])
      : { rows: [] };
    if (result.rows.length === 0) {
      res.status(404).json({ error: "not found" });
      return;
    }
    res.json(result.rows[0]);
  });

  router.post("/executions", async (req: Request, res: Response) => {
    const body: unknown = req.body;
    const input = typeof body === "object" && body !== null && "input" in body ? body.input : {};
    const state = engine.initialState;
    const final = engine.isFinal(state);
    const history = [{ state, event: null, at: new Date().toISOString() }];
    const result = await pool.query<ExecutionRow>(
      `INSERT INTO workflow_executions (status, current_state, started_at, finished_at, input, history)
       VALUES ($1, $2, now(), CASE WHEN $3::boolean THEN now() END, $4, $5) RETURNING ${COLUMNS}`,
      [final ? "completed" : "running", state, final, JSON.stringify(input ?? {}), JSON.stringify(history)],
    );
    res.status(201).json(result.rows[0]);
  });

  router.post("/executions/:id/events", async (req: Request, res: Response) => {
    const id = String(req.params.id);
    const body: unknown = req.body;
    const event = typeof body === "object" && body !== null && "event" in body ? body.event : undefined;
    if (typeof event !== "string" || !validId(id)) {
      res.status(422).json({ error: "send {\"event\": \"...\"} to an existing execution" });
      return;
    }
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      const found = await client.query<ExecutionRow>(
        `SELECT ${COLUMNS} FROM workflow_executions WHERE execution_id = $1 FOR UPDATE`,
        [id],
      );
      const execution = found.rows[0];
      if (!execution) {
        await client.query("ROLLBACK");
        res.status(404).json({ error: "not found" });
        return;
      }
      const state = execution.current_state ?? "";
      const transition = execution.status === "running" ? engine.transition(state, event) : undefined;
      if (!transition) {
        await client.query("ROLLBACK");
        res.status(409).json({ error: "event not allowed now", status: execution.status, allowed: engine.events(state) });
        return;
      }
      const final = engine.isFinal(transition.to);
      const step = [{ state: transition.to, event, at: new Date().toISOString() }];
      const updated = await client.query<ExecutionRow>(
        `UPDATE workflow_executions
            SET current_state = $2, status = $3, history = history || $4::jsonb,
                finished_at = CASE WHEN $5::boolean THEN now() END
          WHERE execution_id = $1 RETURNING ${COLUMNS}`,
        [id, transition.to, final ? "completed" : "running", JSON.stringify(step), final],
      );
      await client.query("COMMIT");
      res.json(updated.rows[0]);
    } catch (err) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  });

  return router;
}
