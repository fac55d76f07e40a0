"""The field types of a submission, pure: what each kind of string may hold, and git's branch-name rules."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from environments.git import branch_name_problem, check_branch_name
from switchyard.errors import InputError
from tasks.schemas import parse_request

BASE = {"kind": "plan", "environment": "dev1", "goal": "g"}


def refusal(**fields: object) -> str:
    with pytest.raises(InputError) as refused:
        parse_request({**BASE, **fields})
    return str(refused.value)


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\x00", "NUL"),
        ("\x01", "U+0001"),
        ("\x08", "U+0008"),
        ("\x0b", "U+000B"),
        ("\x1b", "ESC"),
        ("\x7f", "DEL"),
        ("\x85", "U+0085"),
        ("\x9f", "U+009F"),
    ],
)
@pytest.mark.parametrize("field", ["title", "description", "goal", "feedback"])
def test_no_text_holds_a_control_character(field: str, char: str, shown: str) -> None:
    message = refusal(**{field: f"a{char}b"})
    assert f"{field} 'a" in message and f"has a control character ({shown}) at position 1; remove it" in message


@pytest.mark.parametrize("field", ["description", "goal", "feedback"])
def test_prose_keeps_tabs_and_line_breaks(field: str) -> None:
    text = "first\n\tsecond\r\nthird \u2028 fourth, \u00e9t\u00e9 \U0001f680 \u200d"
    assert getattr(parse_request({**BASE, field: text}), field) == text


@pytest.mark.parametrize(("char", "shown"), [("\n", "a newline"), ("\r", "a carriage return"), ("\u2028", "U+2028")])
def test_a_title_is_one_line(char: str, shown: str) -> None:
    assert f"has a line break ({shown}) at position 3; a title is one line" in refusal(title=f"one{char}two")
    assert parse_request({**BASE, "title": "one\ttwo"}).title == "one\ttwo"


def test_a_lone_surrogate_is_refused() -> None:
    assert "goal: Input should be a valid string" in refusal(goal="a\ud800b")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"environment": "dev 1"}, "environment 'dev 1' has whitespace (a space) at position 3; names have none"),
        ({"stage": "-qa"}, "stage '-qa' starts with '-'; names never do"),
        ({"implementer": "co\tdex"}, "has whitespace (a tab)"),
        ({"avoid_providers": ["ok", "--x"]}, "avoid_providers.1 '--x' starts with '-'"),
        ({"plan_key": "k\x00"}, "plan_key 'k\\x00' has a control character (NUL)"),
        ({"parent_id": "a/b"}, "parent_id 'a/b' is not a task id"),
        ({"review_of": ".hidden"}, "review_of '.hidden' is not a task id"),
        ({"depends_on": ["ok", "--all"]}, "depends_on.1 '--all' is not a task id"),
        ({"branch": "-b"}, "branch '-b' starts with '-', so git would read it as an option"),
        ({"base_branches": ["main", "a b"]}, "base_branches.1 'a b' has U+0020, which git does not allow"),
        ({"branch": "x" * 256}, "branch: String should have at most 255 characters"),
    ],
)
def test_names_ids_and_branches(fields: dict[str, object], message: str) -> None:
    assert message in refusal(**fields)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        (" x", "surrounding spaces"),
        ("-x", "starts with '-'"),
        ("--upload-pack=x", "starts with '-'"),
        ("HEAD", "which git reserves"),
        ("@", "which git reserves"),
        ("a..b", "has '..'"),
        ("a@{1}", "has '@{'"),
        ("a~1", "has '~'"),
        ("a^", "has '^'"),
        ("a:b", "has ':'"),
        ("a?", "has '?'"),
        ("a*", "has '*'"),
        ("a[b", "has '['"),
        ("a\\b", "has '\\\\'"),
        ("a b", "has U+0020"),
        ("a\x00b", "has U+0000"),
        ("a\x7fb", "has U+007F"),
        (".hidden", "starts with '.'"),
        ("a/.b", "starts with '.'"),
        ("a.lock", "ends with '.lock'"),
        ("a/b.lock/c", "ends with '.lock'"),
        ("/a", "starts or ends with '/'"),
        ("a/", "starts or ends with '/'"),
        ("a.", "ends with '.'"),
        ("a//b", "has '//'"),
    ],
)
def test_branch_name_problems(name: str, problem: str) -> None:
    found = branch_name_problem(name)
    assert found is not None and problem in found


@pytest.mark.parametrize("name", ["main", "feature/login-form", "a.b", "env/dev1-qa", "fix_1", "été/ß", "a-", "a@b"])
def test_good_branch_names(name: str) -> None:
    assert branch_name_problem(name) is None
    assert check_branch_name(name) == name


def git_accepts(name: str) -> bool:
    done = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, text=True, check=False)
    return done.returncode == 0 and done.stdout.strip() == name


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab/.-_@{}~^:?*[\\ \t\x01HEADlock"), min_size=0, max_size=12))
def test_what_we_accept_git_accepts(name: str) -> None:
    """Our pure rules are never looser than git's: a name we pass, git passes too (we may refuse more)."""
    if branch_name_problem(name) is None:
        assert git_accepts(name), name
    else:
        with pytest.raises(InputError):
            check_branch_name(name)


def test_a_providers_words_are_made_fit_not_refused() -> None:
    """Review comments and a plan's sub-tasks come from a provider: their control characters are dropped,
    so the follow-up they ask for is not refused after the call was paid."""
    from tasks.kinds.plan import SubTask
    from tasks.kinds.review import render_feedback
    from tasks.schemas import one_line, printable

    said = "fix\x1b[31m this\x00\n\tplease\r\n"
    assert printable(said) == "fix[31m this\n\tplease\r\n"
    assert one_line("two\nlines\x07") == "two lines"
    feedback = render_feedback("request_changes", "no\x00", [{"file": "a.py", "line": 1, "body": "\x1bbad"}])
    request = parse_request({"kind": "pr_impl", "environment": "dev1", "title": one_line(said), "feedback": feedback})
    assert request.feedback == "Verdict: request_changes. no\n- a.py:1: bad"
    with pytest.raises(ValueError, match="should match pattern"):
        SubTask(key="-k", kind="dev_task", title="t")  # a key that starts with '-' is an unusable answer
