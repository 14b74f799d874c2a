// The form's fields and the database columns they are stored in. Generated: field names are
// the form's own, column names are safe identifiers derived from them.
export type FieldKind = {% for kind in kinds %}{{ kind | ts_string }}{{ " | " if not loop.last }}{% endfor %};

export interface Field {
  name: string;
  label: string;
  column: string;
  kind: FieldKind;
  required: boolean;
  options: readonly string[];
}

export const TABLE = {{ table | ts_string }};

export const FIELDS: readonly Field[] = [
{% for c in columns %}
  {
    name: {{ c.field | ts_string }},
    label: {{ c.label | ts_string }},
    column: {{ c.column | ts_string }},
    kind: {{ c.kind | ts_string }},
    required: {{ "true" if c.required else "false" }},
    options: [{% for option in c.options %}{{ option | ts_string }}{{ ", " if not loop.last }}{% endfor %}],
  },
{% endfor %}
];

export interface SubmissionRow {
  submission_id: string;
  submitted_at: Date;
{% for c in columns %}
  {{ c.column | ts_string }}: {{ c.ts_type }} | null;
{% endfor %}
  data: Record<string, unknown>;
}

export const DEFINITION_SQL = {{ sql.definition | ts_string }};
export const SELECT_PAGE_SQL = {{ sql.page | ts_string }};
export const SELECT_ONE_SQL = {{ sql.one | ts_string }};
export const INSERT_SQL = {{ sql.insert | ts_string }};
