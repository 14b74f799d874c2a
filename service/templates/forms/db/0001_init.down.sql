DROP TABLE IF EXISTS {{ table | sql_ident }};
DROP TABLE IF EXISTS form_definition;
