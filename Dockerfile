# syntax=docker/dockerfile:1

# Build stage: full install (TypeScript, types) and compile to dist/ (rootDir "." => dist/src/...).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY scripts ./scripts
COPY dashboard ./dashboard
RUN npm run build

# Runtime stage: production dependencies and compiled JavaScript only.
FROM node:20-bookworm-slim AS runtime
# HOST: listen on all interfaces, so the published port reaches the gateway (the default outside
# production is 127.0.0.1).
ENV NODE_ENV=production DATA_DIR=/data HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist ./dist
# Created before VOLUME and owned by "node" so a fresh named volume is writable by the gateway.
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME /data
EXPOSE 5432 8443
CMD ["node", "dist/src/cli/index.js", "serve"]
