"""The REST handlers, one per spec operation the fake implements, in Gitea's order of checks.

Each handler gets a ``Call`` (who is asking, the matched operation, the checked body) and returns a
response or raises ``ForgeError``. Status codes, empty bodies and messages follow Gitea 1.26's source
(the operations themselves are in its swagger spec, ``data/``); [FJ] marks where Forgejo answers differently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web

from . import git
from .gojson import encode
from .render import JSON, Renderer
from .service import ForgeError, ReviewComment, Service
from .spec import BodyCheck, Operation
from .state import Access, Comment, Issue, Label, Pull, Repo, State, User

DEFAULT_PAGING = 30  # [api] DEFAULT_PAGING_NUM
MAX_RESPONSE_ITEMS = 50  # [api] MAX_RESPONSE_ITEMS
VERSIONS = {False: "1.26.3", True: "15.0.3+gitea-1.22.0"}
CONTENT_TYPES = ("comment", "code", "review")  # comment types that carry text (HasContentSupport)

Handler = Callable[["Call"], Awaitable[web.StreamResponse]]
ROUTES: dict[tuple[str, str], Handler] = {}


def route(method: str, *templates: str) -> Callable[[Handler], Handler]:
    """Register a handler for spec path templates (several when Gitea and Forgejo name a parameter
    differently)."""
    def register(handler: Handler) -> Handler:
        for template in templates:
            ROUTES[(method, template)] = handler
        return handler
    return register


@dataclass
class Call:
    svc: Service
    request: web.Request
    op: Operation
    params: dict[str, str]
    doer: User | None
    body_check: BodyCheck | None

    # --- responses ---------------------------------------------------------------------------------

    def json(self, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return json_response(value, status, headers)

    def error_response(self, error: ForgeError) -> web.Response:
        return error_response(self.svc.site.swagger_url, error)

    def internal(self, detail: str) -> ForgeError:
        """500 as Gitea answers it in production: the message only for site admins."""
        return ForgeError(500, detail if self.doer is not None and self.doer.is_admin else "")

    # --- input -------------------------------------------------------------------------------------

    def body(self) -> Any:
        """The bound body; Gitea's 422 when binding failed."""
        check = self.body_check
        if check is None:
            return {}
        if check.binding_error is not None:
            raise ForgeError(422, check.binding_error)
        return check.value

    def query(self, name: str, default: str = "") -> str:
        return self.request.query.get(name, default).strip()

    def int_param(self, name: str) -> int:
        """ctx.PathParamInt64: anything unparsable is 0, which then matches nothing."""
        try:
            return int(self.params[name])
        except ValueError:
            return 0

    def page(self) -> tuple[int, int]:
        page, limit = _form_int(self.query("page")), _form_int(self.query("limit"))
        if limit <= 0:
            limit = DEFAULT_PAGING
        return max(page, 1), min(limit, MAX_RESPONSE_ITEMS)

    def paginate(self, items: list[Any], *, link: bool = False) -> tuple[list[Any], dict[str, str]]:
        """One page of ``items`` plus ``X-Total-Count`` (and ``Link`` where Gitea sends it)."""
        page, limit = self.page()
        headers = {"X-Total-Count": str(len(items))}
        if link and (links := self._links(len(items), limit)):
            headers["Link"] = ",".join(links)
        return items[(page - 1) * limit:page * limit], headers

    def _links(self, total: int, limit: int) -> list[str]:
        """genAPILinks: next, last, first, prev; absolute URLs with the query re-encoded, sorted."""
        pages = max(1, -(-total // limit))
        current = min(max(_form_int(self.query("page")), 1), pages)
        query = dict(self.request.query)

        def url(page: int) -> str:
            encoded = urlencode(sorted({**query, "page": str(page)}.items()))
            return f'<{self.svc.site.app_url}{self.request.path.lstrip("/")}?{encoded}>'

        links = []
        if total > current * limit:
            links.append(f'{url(current + 1)}; rel="next"')
        if current != pages and total:
            links.append(f'{url(pages)}; rel="last"')
        if current != 1:
            links.append(f'{url(1)}; rel="first"')
        if current > 1:
            links.append(f'{url(current - 1)}; rel="prev"')
        return links

    # --- lookups and checks ------------------------------------------------------------------------

    def need_token(self) -> User:
        if self.doer is None:
            raise ForgeError(401, "token is required")
        return self.doer

    @property
    def state(self) -> State:
        return self.svc.state

    @property
    def render(self) -> Renderer:
        return self.svc.render

    @property
    def forgejo(self) -> bool:
        return self.svc.site.forgejo

    def repo(self) -> Repo:
        """repoAssignment: unknown or invisible repos are both 404."""
        repo = self.state.find_repo(self.params["owner"], self.params["repo"])
        if repo is None or not self.state.can_see(self.doer, repo):
            raise ForgeError(404, "not found")
        return repo

    def access(self, repo: Repo) -> Access:
        return self.state.access(self.doer, repo)

    def can_write(self, repo: Repo) -> bool:
        return self.access(repo) >= Access.WRITE

    def issue(self, repo: Repo) -> Issue:
        issue = self.state.find_issue(repo, self.int_param("index"))
        if issue is None:
            raise ForgeError(404, "not found")
        return issue

    def pull(self, repo: Repo) -> Pull:
        issue = self.state.find_issue(repo, self.int_param("index"))
        if issue is None or issue.pull is None:
            raise ForgeError(404, "not found")
        return issue.pull

    def comment(self, repo: Repo) -> Comment:
        comment = self.state.comments.get(self.int_param("id"))
        if comment is None:
            raise ForgeError(404, "not found")
        if comment.issue.repo is not repo:
            raise ForgeError(404, empty=True)  # ctx.Status(404): another repo's comment
        return comment


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """What Gitea's ctx.JSON writes: Go's encoder output, ``application/json;charset=utf-8``."""
    return web.Response(status=status, body=encode(value),
                        headers={"Content-Type": "application/json;charset=utf-8", **(headers or {})})


def error_response(swagger_url: str, error: ForgeError) -> web.Response:
    if error.empty:
        return web.Response(status=error.status)
    body: JSON = {"message": error.message, "url": swagger_url}
    if error.status == 404:
        body = {"errors": [], **body}  # a Go map: keys come out sorted
    return json_response(body, error.status)


def _form_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _state_filter(call: Call) -> str:
    """``state``: "closed" and "all" mean what they say; anything else (or nothing) means open."""
    state = call.query("state")
    return state if state in ("closed", "all") else "open"


def _window(call: Call) -> Callable[[datetime | None], bool]:
    """The ``since``/``before`` query filter (RFC 3339) as a predicate on a timestamp."""
    def parse(name: str) -> datetime | None:
        text = call.query(name)
        if not text:
            return None
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ForgeError(422, f"invalid {name}: {text}") from exc

    since, before = parse("since"), parse("before")
    return lambda when: (when is not None and (since is None or when >= since)
                         and (before is None or when < before))


# --- server and user -----------------------------------------------------------------------------


@route("GET", "/version")
async def get_version(call: Call) -> web.StreamResponse:
    return call.json({"version": VERSIONS[call.forgejo]})


@route("GET", "/user")
async def get_user(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    return call.json(call.render.user(doer, doer))


@route("GET", "/user/stopwatches")
async def get_stopwatches(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    mine = [sw for sw in call.state.stopwatches.values() if sw.user is doer]
    if call.forgejo and "page" not in call.request.query:
        items, headers = mine, {"X-Total-Count": str(len(mine))}  # [FJ] no page: everything
    else:
        items, headers = call.paginate(mine)
    return call.json([call.render.stopwatch(sw) for sw in items], headers=headers)


@route("GET", "/repos/{owner}/{repo}")
async def get_repo(call: Call) -> web.StreamResponse:
    repo = call.repo()
    return call.json(call.render.repo_for(repo, call.doer))


@route("GET", "/repos/{owner}/{repo}/branches/{branch}")
async def get_branch(call: Call) -> web.StreamResponse:
    repo = call.repo()
    name = call.params["branch"]
    if name not in repo.branches:
        raise ForgeError(404, "Branch not found")
    info = await _commit_info(repo, repo.branches[name])
    writer = call.can_write(repo)
    rule = repo.protection(name)
    return call.json({
        "name": name,
        "commit": _payload_commit(call, repo, info),
        "protected": rule is not None,
        "required_approvals": 0,
        "enable_status_check": False,
        "status_check_contexts": [],
        "user_can_push": writer and (call.doer is not None and repo.may_push(call.doer.login, name)),
        "user_can_merge": writer,
        "effective_branch_protection_name": rule or "",
    })


async def _commit_info(repo: Repo, sha: str) -> git.CommitInfo:
    return await asyncio.to_thread(git.commit_info, repo.path, sha)


def _payload_commit(call: Call, repo: Repo, info: git.CommitInfo) -> JSON:
    def person(name: str, email: str) -> JSON:
        user = call.state.user_by_email(email)
        return {"name": name, "email": email, "username": user.login if user else ""}

    return {
        "id": info.sha,
        "message": info.message,
        "url": f"{call.render.repo_html(repo)}/commit/{info.sha}",
        "author": person(info.author_name, info.author_email),
        "committer": person(info.committer_name, info.committer_email),
        "verification": None,
        "timestamp": info.timestamp.replace("+00:00", "Z"),
        "added": None,
        "removed": None,
        "modified": None,
    }


@route("GET", "/repos/{owner}/{repo}/collaborators/{collaborator}/permission")
async def get_permission(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    repo = call.repo()
    name = call.params["collaborator"]
    if not doer.is_admin and doer.login.lower() != name.lower() and call.access(repo) < Access.ADMIN:
        raise ForgeError(403, "Only admins can query all permissions, repo admins can query all repo permissions, "
                            "collaborators can query only their own")
    user = call.state.find_user(name)
    if user is None:
        raise ForgeError(404, f"user does not exist [uid: 0, name: {name}]")
    mode = call.state.access(user, repo).label
    # ToUserAndPermission renders the user as seen by the repo owner (ctx.ContextUser).
    return call.json({"permission": mode, "role_name": mode, "user": call.render.user(user, repo.owner)})


# --- issues and comments -------------------------------------------------------------------------


@route("GET", "/repos/{owner}/{repo}/issues")
async def list_issues(call: Call) -> web.StreamResponse:
    """Issues *and* pulls unless ``type`` says otherwise; newest first."""
    repo = call.repo()
    state = _state_filter(call)
    kind = call.query("type")
    issues = [i for i in call.state.issues.values() if i.repo is repo
              and (state == "all" or i.state == state)
              and (kind != "issues" or not i.is_pull) and (kind != "pulls" or i.is_pull)]
    if names := {n for n in call.query("labels").split(",") if n}:
        issues = [i for i in issues if names & {lb.name for lb in i.labels}]
    if poster := call.query("created_by"):
        issues = [i for i in issues if i.poster.login.lower() == poster.lower()]
    in_window = _window(call)
    issues = [i for i in issues if in_window(i.updated_at)]
    issues.sort(key=lambda i: (i.created_at, i.id), reverse=True)
    items, headers = call.paginate(issues, link=True)
    return call.json([call.render.issue(i, call.doer) for i in items], headers=headers)



@route("GET", "/repos/{owner}/{repo}/issues/{index}")
async def get_issue(call: Call) -> web.StreamResponse:
    repo = call.repo()
    return call.json(call.render.issue(call.issue(repo), call.doer))


@route("GET", "/repos/{owner}/{repo}/issues/{index}/comments")
async def list_comments(call: Call) -> web.StreamResponse:
    repo = call.repo()
    issue = call.issue(repo)
    in_window = _window(call)
    comments = [c for c in call.state.issue_comments(issue) if in_window(c.updated_at)]
    return call.json([call.render.comment(c) for c in comments], headers={"X-Total-Count": str(len(comments))})


@route("POST", "/repos/{owner}/{repo}/issues/{index}/comments")
async def create_comment(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    repo = call.repo()
    form = call.body()
    issue = call.state.find_issue(repo, call.int_param("index"))
    if issue is None:
        if call.forgejo:
            raise ForgeError(404, "not found")
        raise call.internal(f"issue does not exist [id: 0, repo_id: {repo.id}, index: {call.int_param('index')}]")
    if issue.is_locked and not call.can_write(repo) and not doer.is_admin:
        raise ForgeError(403, "You cannot comment on a locked issue.")
    comment, _ = call.svc.create_comment(issue, doer, form["body"])
    return call.json(call.render.comment(comment), 201)


@route("GET", "/repos/{owner}/{repo}/issues/comments/{id}")
async def get_comment(call: Call) -> web.StreamResponse:
    repo = call.repo()
    comment = call.comment(repo)
    if comment.type not in CONTENT_TYPES:
        return web.Response(status=204)
    return call.json(call.render.comment(comment))


def _editable_comment(call: Call, doer: User) -> Comment:
    comment = call.comment(call.repo())
    if doer is not comment.poster and not call.can_write(comment.issue.repo):
        raise ForgeError(403, empty=True)
    return comment


@route("PATCH", "/repos/{owner}/{repo}/issues/comments/{id}")
async def edit_comment(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    form = call.body()
    comment = _editable_comment(call, doer)
    if comment.type not in CONTENT_TYPES:
        return web.Response(status=204)
    call.svc.edit_comment(comment, doer, form["body"])
    return call.json(call.render.comment(comment))


@route("DELETE", "/repos/{owner}/{repo}/issues/comments/{id}")
async def delete_comment(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    comment = _editable_comment(call, doer)
    if comment.type != "comment":
        raise ForgeError(400, empty=True)
    call.svc.delete_comment(comment, doer)
    return web.Response(status=204)


# --- labels --------------------------------------------------------------------------------------


@route("GET", "/repos/{owner}/{repo}/labels")
async def list_repo_labels(call: Call) -> web.StreamResponse:
    repo = call.repo()
    labels = sorted(call.state.repo_labels(repo), key=lambda lb: lb.name)
    items, headers = call.paginate(labels)
    return call.json([call.render.label(lb) for lb in items], headers=headers)


@route("POST", "/repos/{owner}/{repo}/labels")
async def create_repo_label(call: Call) -> web.StreamResponse:
    call.need_token()
    repo = call.repo()
    if not call.can_write(repo):
        raise ForgeError(403, "user should have a permission to write to a repo")
    form = call.body()
    color = form["color"].strip().lstrip("#")
    if len(color) == 3:
        color = "".join(ch * 2 for ch in color)
    if len(color) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in color):
        raise ForgeError(422, "ColorPattern")
    label = call.state.add_label(repo, form["name"], color, description=form.get("description") or "",
                                 exclusive=bool(form.get("exclusive")), is_archived=bool(form.get("is_archived")))
    return call.json(call.render.label(label), 201)


@route("GET", "/repos/{owner}/{repo}/issues/{index}/labels")
async def list_issue_labels(call: Call) -> web.StreamResponse:
    issue = call.issue(call.repo())
    return call.json([call.render.label(lb) for lb in issue.labels])


def _labels_target(call: Call) -> tuple[User, Issue]:
    """prepareForReplaceOrAdd, first half: the issue, then an empty 403 for non-writers."""
    doer = call.need_token()
    repo = call.repo()
    issue = call.issue(repo)
    if not call.can_write(repo):
        raise ForgeError(403, empty=True)
    return doer, issue


def _labels_from_form(call: Call, issue: Issue, form: JSON) -> list[Label]:
    """All ids or all names; unknown ones are silently dropped. Names also match org labels."""
    entries = form.get("labels") or []
    ids = [int(e) for e in entries if isinstance(e, (int, float)) and not isinstance(e, bool)]
    names = [e for e in entries if isinstance(e, str)]
    if len(ids) + len(names) != len(entries):
        raise ForgeError(400, "a label must be an integer or a string")
    if ids and names:
        raise ForgeError(400, "labels should be an array of strings or integers")
    usable = call.state.usable_labels(issue.repo)
    if names:
        return [lb for lb in usable if lb.name in names]
    return [lb for lb in usable if lb.id in ids]


def _label_list(call: Call, issue: Issue) -> web.Response:
    return call.json([call.render.label(lb) for lb in issue.labels])


@route("POST", "/repos/{owner}/{repo}/issues/{index}/labels")
async def add_issue_labels(call: Call) -> web.StreamResponse:
    form = call.body()
    doer, issue = _labels_target(call)
    labels = _labels_from_form(call, issue, form)
    call.svc.change_labels(issue, doer, issue.labels + labels)
    return _label_list(call, issue)


@route("PUT", "/repos/{owner}/{repo}/issues/{index}/labels")
async def replace_issue_labels(call: Call) -> web.StreamResponse:
    form = call.body()
    doer, issue = _labels_target(call)
    call.svc.change_labels(issue, doer, _labels_from_form(call, issue, form))
    return _label_list(call, issue)


@route("DELETE", "/repos/{owner}/{repo}/issues/{index}/labels")
async def clear_issue_labels(call: Call) -> web.StreamResponse:
    doer, issue = _labels_target(call)
    call.svc.change_labels(issue, doer, [], cleared=True)
    return web.Response(status=204)


@route("DELETE", "/repos/{owner}/{repo}/issues/{index}/labels/{id}",
       "/repos/{owner}/{repo}/issues/{index}/labels/{identifier}")
async def remove_issue_label(call: Call) -> web.StreamResponse:
    doer, issue = _labels_target(call)
    label = None
    if call.forgejo:  # [FJ] a name first, then an id
        key = call.params["identifier"]
        label = next((lb for lb in call.state.usable_labels(issue.repo) if lb.name == key), None)
        label = label or call.state.labels.get(_form_int(key))
    else:
        label = call.state.labels.get(call.int_param("id"))  # numeric ids only
    if label is None:
        raise ForgeError(422, "label does not exist")
    call.svc.change_labels(issue, doer, [lb for lb in issue.labels if lb is not label])
    return web.Response(status=204)


# --- time tracking -------------------------------------------------------------------------------


def _stopwatch_target(call: Call) -> tuple[User, Issue]:
    """prepareIssueStopwatch: 404, then empty 403s for non-writers and disabled time tracking."""
    doer = call.need_token()
    repo = call.repo()
    issue = call.issue(repo)
    if not call.can_write(repo) or not repo.time_tracking:
        raise ForgeError(403, empty=True)
    return doer, issue


@route("POST", "/repos/{owner}/{repo}/issues/{index}/stopwatch/start")
async def start_stopwatch(call: Call) -> web.StreamResponse:
    doer, issue = _stopwatch_target(call)
    call.svc.start_stopwatch(issue, doer)
    return web.Response(status=201)


@route("POST", "/repos/{owner}/{repo}/issues/{index}/stopwatch/stop")
async def stop_stopwatch(call: Call) -> web.StreamResponse:
    doer, issue = _stopwatch_target(call)
    call.svc.stop_stopwatch(issue, doer)
    return web.Response(status=201)


@route("DELETE", "/repos/{owner}/{repo}/issues/{index}/stopwatch/delete")
async def delete_stopwatch(call: Call) -> web.StreamResponse:
    doer, issue = _stopwatch_target(call)
    call.svc.cancel_stopwatch(issue, doer)
    return web.Response(status=204)


@route("GET", "/repos/{owner}/{repo}/issues/{index}/times")
async def list_times(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    repo = call.repo()
    if not repo.time_tracking:
        raise ForgeError(404, "Timetracker is disabled")
    issue = call.issue(repo)
    wanted: User | None = None
    if name := call.query("user"):
        wanted = call.state.find_user(name)
        if wanted is None:
            raise ForgeError(404, "user does not exist")
    if not doer.is_admin and wanted is not doer and not call.can_write(repo):
        if wanted is not None:
            raise ForgeError(403, "query by user not allowed; not enough rights")
        wanted = doer  # readers only ever see their own times
    in_window = _window(call)
    times = [t for t in call.state.times
             if t.issue is issue and (wanted is None or t.user is wanted) and in_window(t.created)]
    items, headers = call.paginate(times)
    return call.json([call.render.tracked_time(t, doer) for t in items], headers=headers)


@route("POST", "/repos/{owner}/{repo}/issues/{index}/times")
async def add_time(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    repo = call.repo()
    form = call.body()
    issue = call.issue(repo)
    allowed = call.can_write(repo) or doer is issue.poster or doer in issue.assignees
    if not repo.time_tracking:
        raise ForgeError(400, "time tracking disabled")
    if not allowed:
        raise ForgeError(403, empty=True)
    user = doer
    name = form.get("user_name") or ""
    if name and (doer.is_admin or (call.access(repo) >= Access.ADMIN and doer.login != name)):
        user = call.state.find_user(name) or doer
    created = form.get("created")
    when = datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None
    call.state.add_comment(issue, user, "", type="add_time_manual")
    tracked = call.state.add_time(issue, user, int(form["time"]), when)
    return call.json(call.render.tracked_time(tracked, user))


# --- commit statuses -----------------------------------------------------------------------------


@route("POST", "/repos/{owner}/{repo}/statuses/{sha}")
async def create_status(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    repo = call.repo()
    if not call.can_write(repo):
        raise ForgeError(403, "user should have a permission to write to a repo")
    form = call.body()
    sha = call.params["sha"]
    full = await _resolve(repo, sha)
    if full is None:
        if call.forgejo:
            raise ForgeError(404, "not found")
        raise call.internal(f"GetCommit[{sha}]: object does not exist [id: {sha}, rel_path: ]")
    status = call.svc.create_status(repo, full, doer, form.get("state") or "", form.get("target_url") or "",
                                    form.get("description") or "", form.get("context") or "")
    return call.json(call.render.status(status), 201)


async def _resolve(repo: Repo, rev: str) -> str | None:
    return await asyncio.to_thread(git.resolve_commit, repo.path, rev)


def _status_list(call: Call, repo: Repo, sha: str) -> web.Response:
    statuses = [s for s in call.state.statuses if s.repo is repo and s.sha == sha]
    if state := call.query("state"):
        statuses = [s for s in statuses if s.state == state]
    ordering = {
        "oldest": (lambda s: (s.created_at, s.index), False),
        "recentupdate": (lambda s: (s.created_at, s.index), True),
        "leastupdate": (lambda s: (s.created_at, s.index), False),
        "leastindex": (lambda s: s.index, False),
        "highestindex": (lambda s: s.index, True),
    }
    key, reverse = ordering.get(call.query("sort"), (lambda s: (s.created_at, s.index), True))
    items, headers = call.paginate(sorted(statuses, key=key, reverse=reverse), link=True)
    return call.json([call.render.status(s) for s in items], headers=headers)


@route("GET", "/repos/{owner}/{repo}/statuses/{sha}")
async def list_statuses(call: Call) -> web.StreamResponse:
    repo = call.repo()
    return _status_list(call, repo, call.params["sha"])  # used verbatim: a short sha matches nothing


async def _ref_sha(call: Call, repo: Repo) -> str:
    sha = await _resolve(repo, call.params["ref"])
    if sha is None:
        raise ForgeError(404, "not found")
    return sha


@route("GET", "/repos/{owner}/{repo}/commits/{ref}/statuses")
async def list_ref_statuses(call: Call) -> web.StreamResponse:
    repo = call.repo()
    return _status_list(call, repo, await _ref_sha(call, repo))


@route("GET", "/repos/{owner}/{repo}/commits/{ref}/status")
async def combined_status(call: Call) -> web.StreamResponse:
    repo = call.repo()
    sha = await _ref_sha(call, repo)
    latest: dict[str, Any] = {}
    for status in call.state.statuses:
        if status.repo is repo and status.sha == sha:
            latest[status.context] = status
    statuses = sorted(latest.values(), key=lambda s: s.index, reverse=True)
    if not statuses:
        return call.json({"state": "", "sha": "", "total_count": 0, "statuses": None, "repository": None,
                          "commit_url": "", "url": ""})
    items, headers = call.paginate(statuses)
    api_repo = call.render.repo_for(repo, call.doer)
    return call.json({
        "state": combine([s.state for s in statuses]),
        "sha": sha,
        "total_count": len(items),
        "statuses": [call.render.status(s) for s in items],
        "repository": api_repo,
        "commit_url": f"{api_repo['url']}/commits/{sha}",
        "url": f"{api_repo['url']}/commits/{sha}/status",
    }, headers=headers)


def combine(states: list[str]) -> str:
    """CommitStatusStates.Combine: any error/failure fails; all success/warning/skipped succeed."""
    if any(s in ("error", "failure") for s in states):
        return "failure"
    if states and all(s in ("success", "warning", "skipped") for s in states):
        return "success"
    return "pending"


# --- pull requests -------------------------------------------------------------------------------


@route("GET", "/repos/{owner}/{repo}/pulls")
async def list_pulls(call: Call) -> web.StreamResponse:
    repo = call.repo()
    state = _state_filter(call)
    pulls = [p for p in call.state.pulls(repo) if state == "all" or p.issue.state == state]
    if base := call.query("base_branch"):
        pulls = [p for p in pulls if p.base_branch == base]
    if poster := call.query("poster"):
        pulls = [p for p in pulls if p.issue.poster.login.lower() == poster.lower()]
    if label_ids := call.request.query.getall("labels", []):
        wanted = {_form_int(x) for x in label_ids}
        pulls = [p for p in pulls if wanted & {lb.id for lb in p.issue.labels}]
    sort = call.query("sort")
    if sort == "oldest":
        pulls.sort(key=lambda p: (p.issue.created_at, p.issue.id))
    elif sort in ("recentupdate", "leastupdate"):
        pulls.sort(key=lambda p: (p.issue.updated_at, p.issue.id), reverse=sort == "recentupdate")
    else:
        pulls.sort(key=lambda p: (p.issue.created_at, p.issue.id), reverse=True)
    items, headers = call.paginate(pulls, link=True)
    return call.json([call.render.pull(p, call.doer, with_stats=False) for p in items], headers=headers)


@route("POST", "/repos/{owner}/{repo}/pulls")
async def create_pull(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    repo = call.repo()
    form = call.body()
    for name in ("head", "base", "title"):  # binding:"Required" in the Go struct, though not in the spec
        if not form.get(name):
            raise ForgeError(422, f"[{name.title()}]: Required")
    head, base = form["head"], form["base"]
    if head == base:
        raise ForgeError(422, "Invalid PullRequest: There are no changes between the head and the base")
    head_repo, head_branch = repo, head
    if ":" in head:
        owner, head_branch = head.split(":", 1)
        head_repo = _fork_of(call, repo, owner)
    if (base not in repo.branches or head_branch not in head_repo.branches
            or not call.state.can_see(doer, head_repo)):
        raise ForgeError(404, "The target couldn't be found.")
    labels = []
    if call.can_write(repo) and form.get("labels"):
        labels = [lb for lb in call.state.usable_labels(repo) if lb.id in form["labels"]]
    pull, _ = await call.svc.create_pull(repo, doer, head_repo, head_branch, base, form["title"],
                                         form.get("body") or "", labels)
    return call.json(call.render.pull(pull, doer), 201)


def _fork_of(call: Call, base: Repo, owner: str) -> Repo:
    """``owner:branch`` names the base repo itself or that owner's fork of it."""
    if owner.lower() == base.owner.login.lower():
        return base
    fork = next((r for r in call.state.repos.values()
                 if r.owner.login.lower() == owner.lower() and r.parent is base), None)
    if fork is None:
        raise ForgeError(404, "The target couldn't be found.")
    return fork


@route("GET", "/repos/{owner}/{repo}/pulls/{index}")
async def get_pull(call: Call) -> web.StreamResponse:
    repo = call.repo()
    return call.json(call.render.pull(call.pull(repo), call.doer))


@route("GET", "/repos/{owner}/{repo}/pulls/{base}/{head}")
async def get_pull_by_branches(call: Call) -> web.StreamResponse:
    """The newest pull (in any state) from ``head`` (``branch`` or ``owner:branch``) into ``base``."""
    repo = call.repo()
    head = call.params["head"]
    head_repo, branch = repo, head
    if ":" in head:
        owner, branch = head.split(":", 1)
        head_repo = _fork_of(call, repo, owner)
    pulls = [p for p in call.state.pulls(repo)
             if p.base_branch == call.params["base"] and p.head_repo is head_repo and p.head_branch == branch]
    if not pulls:
        raise ForgeError(404, "not found")
    return call.json(call.render.pull(max(pulls, key=lambda p: p.id), call.doer))


@route("GET", "/repos/{owner}/{repo}/pulls/{index}/files")
async def list_pull_files(call: Call) -> web.StreamResponse:
    repo = call.repo()
    pull = call.pull(repo)
    files = await call.svc.pull_files(pull)
    page, limit = call.page()
    items, headers = call.paginate(files, link=True)
    pages = max(1, -(-len(files) // limit))
    headers |= {"X-Page": str(page), "X-PerPage": str(limit), "X-PageCount": str(pages),
                "X-HasMore": str(page < pages).lower()}
    html = call.render.repo_html(repo)
    sha = pull.head_sha
    return call.json([{
        "filename": f.filename,
        **({"previous_filename": f.previous_filename} if f.previous_filename else {}),
        "status": f.status,
        "additions": f.additions,
        "deletions": f.deletions,
        "changes": f.additions + f.deletions,
        "html_url": f"{html}/src/commit/{sha}/{f.filename}",
        "contents_url": f"{call.render.repo_api(repo)}/contents/{f.filename}?ref={sha}",
        "raw_url": f"{html}/raw/commit/{sha}/{f.filename}",
    } for f in items], headers=headers)


@route("GET", "/repos/{owner}/{repo}/pulls/{index}/reviews")
async def list_reviews(call: Call) -> web.StreamResponse:
    repo = call.repo()
    pull = call.pull(repo)
    doer = call.doer
    reviews = [r for r in call.state.reviews.values() if r.issue is pull.issue
               and (r.state != "PENDING" or (doer is not None and (doer.is_admin or doer is r.reviewer)))]
    items, headers = call.paginate(reviews)
    return call.json([call.render.review(r, doer) for r in items], headers=headers)


@route("POST", "/repos/{owner}/{repo}/pulls/{index}/reviews")
async def create_review(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    repo = call.repo()
    form = call.body()
    pull = call.pull(repo)
    event, body = form.get("event") or "", form.get("body") or ""
    comments = form.get("comments") or []
    state = _review_state(pull, doer, event, body, bool(comments))
    if pull.issue.state == "closed":
        raise ForgeError(422, "cannot submit a review on a closed pull request")
    parsed = []
    for item in comments:
        old, new = item.get("old_position") or 0, item.get("new_position") or 0
        parsed.append(ReviewComment(item.get("path") or "", item.get("body") or "", -old if old > 0 else new))
    review, _ = call.svc.create_review(pull, doer, state, body, form.get("commit_id") or pull.head_sha, parsed)
    return call.json(call.render.review(review, doer))


def _review_state(pull: Pull, doer: User, event: str, body: str, has_comments: bool) -> str:
    """preparePullReviewType: anything but the three submit events makes a PENDING review."""
    has_body = bool(body.strip())
    needs_body = True
    if event in ("APPROVED", "REQUEST_CHANGES"):
        if pull.issue.poster is doer:
            verb = "approve" if event == "APPROVED" else "reject"
            raise ForgeError(422, f"{verb} your own pull is not allowed")
        state, needs_body = event, event == "REQUEST_CHANGES"
    elif event == "COMMENT":
        if not has_body and not has_comments:
            raise ForgeError(422, f"review event {event} requires a body or a comment")
        state, needs_body = event, False
    else:
        state = "PENDING"
    if needs_body and not has_body:
        raise ForgeError(422, f"review event {event} requires a body")
    return state


@route("GET", "/repos/{owner}/{repo}/pulls/{index}/reviews/{id}/comments")
async def list_review_comments(call: Call) -> web.StreamResponse:
    repo = call.repo()
    pull = call.pull(repo)
    review = call.state.reviews.get(call.int_param("id"))
    if review is None or review.issue is not pull.issue:
        raise ForgeError(404, "not found")
    return call.json([call.render.review_comment(c, call.doer) for c in review.comments])


# --- reactions -----------------------------------------------------------------------------------


def _reaction_target(call: Call) -> tuple[Issue, Comment | None]:
    repo = call.repo()
    if "id" in call.params:
        comment = call.comment(repo)
        return comment.issue, comment
    return call.issue(repo), None


def _reactions_of(call: Call, issue: Issue, comment: Comment | None) -> list[Any]:
    return [r for r in call.state.reactions if r.issue is issue and r.comment is comment]


@route("GET", "/repos/{owner}/{repo}/issues/comments/{id}/reactions", "/repos/{owner}/{repo}/issues/{index}/reactions")
async def list_reactions(call: Call) -> web.StreamResponse:
    issue, comment = _reaction_target(call)
    reactions = _reactions_of(call, issue, comment)
    headers: dict[str, str] = {}
    if comment is None:
        reactions, headers = call.paginate(reactions)
    return call.json([call.render.reaction(r, call.doer) for r in reactions], headers=headers)


@route("POST", "/repos/{owner}/{repo}/issues/comments/{id}/reactions", "/repos/{owner}/{repo}/issues/{index}/reactions")
async def add_reaction(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    form = call.body()
    issue, comment = _reaction_target(call)
    if issue.is_locked and not call.can_write(issue.repo):
        raise ForgeError(403, "this issue is locked")
    reaction, created = call.svc.react(issue, comment, doer, form.get("content") or "")
    return call.json(call.render.reaction(reaction, doer), 201 if created else 200)


@route("DELETE", "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
       "/repos/{owner}/{repo}/issues/{index}/reactions")
async def remove_reaction(call: Call) -> web.StreamResponse:
    doer = call.need_token()
    form = call.body()
    issue, comment = _reaction_target(call)
    if issue.is_locked and not call.can_write(issue.repo):
        raise ForgeError(403, "this issue is locked")
    call.svc.unreact(issue, comment, doer, form.get("content") or "")
    return web.Response(status=200 if call.forgejo else 204)  # Gitea 1.26: 204, [FJ] 200
