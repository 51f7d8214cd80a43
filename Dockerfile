# A layerswarm node (or gateway, or run) in a container, on the official Node 20 image.
# Not built or run in this project's CI (no container engine there): see README.md,
# "Running a node as a service", for how it is meant to be used.
#
#   docker build -t layerswarm .
#   docker run -d --name layerswarm-node --stop-timeout 90 -p 4001:4001 \
#     -v layerswarm-state:/var/lib/layerswarm -v layerswarm-cache:/var/cache/layerswarm \
#     -e LAYERSWARM_MODEL=hf:OWNER/REPO/FILE.gguf -e LAYERSWARM_BOOTSTRAP=203.0.113.7:4001 layerswarm
#
# The full image (not -slim) has g++, make and python3, which the native kernels are built with at npm ci.
FROM node:20-bookworm

WORKDIR /app
# node-llama-cpp is a devDependency (the benchmarks' baseline): skip its downloads
ENV NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
COPY package.json package-lock.json binding.gyp tsconfig.json ./
COPY scripts ./scripts
COPY native ./native
COPY src ./src
COPY bench ./bench
COPY web ./web
COPY models ./models
RUN npm ci && npm run build && npm prune --omit=dev && npm cache clean --force

# State (identity keys, the control socket, <command>.json configs) and the model cache live in volumes.
ENV LAYERSWARM_HOME=/var/lib/layerswarm \
    LAYERSWARM_CACHE=/var/cache/layerswarm \
    LAYERSWARM_LISTEN=/ip4/0.0.0.0/tcp/4001 \
    LAYERSWARM_HOST=0.0.0.0
RUN mkdir -p /var/lib/layerswarm /var/cache/layerswarm && chown node:node /var/lib/layerswarm /var/cache/layerswarm
VOLUME ["/var/lib/layerswarm", "/var/cache/layerswarm"]
USER node

# 4001: the swarm (node, gateway, bootstrap: LAYERSWARM_LISTEN); 8080: the OpenAI API (gateway, run)
EXPOSE 4001 8080
# SIGTERM drains a node (no new sessions, live ones finish or are handed over) within its
# --drain-timeout (60 s by default): give `docker stop` more than that (--stop-timeout 90, or -t 90)
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/src/cli/index.js"]
# settings from LAYERSWARM_* variables, or /var/lib/layerswarm/node.json, or --config FILE
CMD ["node"]
