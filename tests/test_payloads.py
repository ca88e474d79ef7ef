"""Webhook and API payloads: what the bot concludes from them."""

from bot.intake.payloads import PullRequest


def pull(head: dict, base: dict) -> PullRequest:
    user = {"id": 1, "login": "bob"}
    return PullRequest.model_validate({"id": 9, "number": 3, "user": user, "head": head, "base": base})


def test_a_pull_request_counts_as_a_fork_unless_both_sides_name_the_same_repository():
    assert not pull({"repo_id": 5, "repo": {"id": 5}}, {"repo_id": 5, "repo": {"id": 5}}).is_fork
    assert not pull({"repo": {"id": 5}}, {"repo": {"id": 5}}).is_fork  # the API's shape without repo_id
    assert pull({"repo_id": 6}, {"repo_id": 5}).is_fork
    assert pull({"repo": None}, {"repo_id": 5}).is_fork  # a deleted fork: unknown counts as a fork
    assert pull({}, {}).is_fork  # no repository ids at all: still unknown, still a fork
