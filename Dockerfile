# claude-runner: the service and the Claude Code CLI it runs.
FROM node:24-slim

# git and git-crypt for job workspaces; bubblewrap sandboxes every agent run (the container must
# allow it: see "Running in Docker" in the README); tini reaps whatever is left behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git git-crypt ca-certificates tini bubblewrap \
 && rm -rf /var/lib/apt/lists/*

ARG CLAUDE_CODE_VERSION=2.1.332
RUN npm install --global "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
 && npm cache clean --force

WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY src ./src
COPY ui ./ui
COPY bin ./bin
RUN ln -s /app/bin/claude-runner.mjs /usr/local/bin/claude-runner

RUN useradd --create-home --uid 10001 runner \
 && install -d -o runner -m 700 /var/lib/claude-runner
USER runner

# Node runs src/*.ts directly: no build step.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    WORKSPACE_ROOT=/var/lib/claude-runner \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "src/server.ts"]
