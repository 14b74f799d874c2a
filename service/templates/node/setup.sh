#!/bin/sh
# Installs, builds, creates the tables and loads the exported data into DATABASE_URL.
set -eu
TOOL_NAME={{ name | sh_quote }}
cd "$(dirname "$0")/.."
if [ -f .env ]; then
  set -a
  . ./.env
  set +a
fi
: "${DATABASE_URL:?set DATABASE_URL or create .env from .env.example}"
printf 'Setting up %s\n' "$TOOL_NAME"
npm install --no-audit --no-fund
npm run build
npm run migrate
npm run load
printf 'Done. Start the service with: npm start\n'
