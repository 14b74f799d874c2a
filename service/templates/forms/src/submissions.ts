// HTTP API of the form: its definition, submissions (keyset pages), new validated submissions.
import { Router, type Request, type Response } from "express";
import type { Pool } from "pg";
import {
  DEFINITION_SQL,
  FIELDS,
  INSERT_SQL,
  SELECT_ONE_SQL,
  SELECT_PAGE_SQL,
  type Field,
  type SubmissionRow,
} from "./model";

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const NUMBER = /^-?\d+(\.\d+)?$/;

type Checked = { ok: true; value: unknown } | { ok: false; message: string };

function check(field: Field, value: unknown): Checked {
  if (value === undefined || value === null || value === "") {
    return field.required ? { ok: false, message: "is required" } : { ok: true, value: null };
  }
  switch (field.kind) {
    case "number":
      if (typeof value === "number" && Number.isFinite(value)) {
        return { ok: true, value: String(value) };
      }
      return typeof value === "string" && NUMBER.test(value)
        ? { ok: true, value }
        : { ok: false, message: "must be a number" };
    case "checkbox":
      return typeof value === "boolean" ? { ok: true, value } : { ok: false, message: "must be true or false" };
    case "date":
      return typeof value === "string" && DATE.test(value)
        ? { ok: true, value }
        : { ok: false, message: "must be a date (YYYY-MM-DD)" };
    case "multiselect": {
      const items = Array.isArray(value) ? (value as unknown[]) : [value];
      const bad = items.some(
        (item) => typeof item !== "string" || (field.options.length > 0 && !field.options.includes(item)),
      );
      return bad ? { ok: false, message: "has an unknown option" } : { ok: true, value: JSON.stringify(items) };
    }
    case "select":
    case "radio":
      return typeof value === "string" && (field.options.length === 0 || field.options.includes(value))
        ? { ok: true, value }
        : { ok: false, message: "has an unknown option" };
    case "email":
      return typeof value === "string" && value.includes("@")
        ? { ok: true, value }
        : { ok: false, message: "must be an e-mail address" };
    default:
      return typeof value === "string" ? { ok: true, value } : { ok: false, message: "must be text" };
  }
}

export function submissionsRouter(pool: Pool): Router {
  const router = Router();

  router.get("/form", async (_req: Request, res: Response) => {
    const result = await pool.query<{ definition: unknown }>(DEFINITION_SQL);
    res.json(result.rows[0]?.definition ?? null);
  });

  router.get("/submissions", async (req: Request, res: Response) => {
    const after = typeof req.query.after === "string" && /^\d+$/.test(req.query.after) ? req.query.after : "0";
    const limit = Math.min(Math.max(Number(req.query.limit ?? 50) || 50, 1), 500);
    const result = await pool.query<SubmissionRow>(SELECT_PAGE_SQL, [after, limit]);
    const last = result.rows[result.rows.length - 1];
    res.json({ items: result.rows, next_after: result.rows.length === limit && last ? last.submission_id : null });
  });

  router.get("/submissions/:id", async (req: Request, res: Response) => {
    const id = String(req.params.id);
    if (!/^\d+$/.test(id)) {
      res.status(404).json({ error: "not found" });
      return;
    }
    const result = await pool.query<SubmissionRow>(SELECT_ONE_SQL, [id]);
    if (result.rows.length === 0) {
      res.status(404).json({ error: "not found" });
      return;
    }
    res.json(result.rows[0]);
  });

  router.post("/submissions", async (req: Request, res: Response) => {
    const body: unknown = req.body;
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      res.status(422).json({ errors: [{ field: null, message: "the body must be a JSON object" }] });
      return;
    }
    const answers = body as Record<string, unknown>;
    const values: unknown[] = [];
    const errors: { field: string; message: string }[] = [];
    for (const field of FIELDS) {
      const checked = check(field, answers[field.name]);
      if (checked.ok) {
        values.push(checked.value);
      } else {
        errors.push({ field: field.name, message: `${field.label} ${checked.message}` });
      }
    }
    if (errors.length > 0) {
      res.status(422).json({ errors });
      return;
    }
    values.push(JSON.stringify(answers));
    const result = await pool.query<{ submission_id: string }>(INSERT_SQL, values);
    res.status(201).json({ submission_id: result.rows[0]?.submission_id });
  });

  return router;
}
