"""Moderation pages: who may see them, the case queue and its filters, a case's evidence and audit log (never an
image), the hash-bank page, the nav links by role, and the gallery's "Report" button."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from imagen.accounts.models import User
from imagen.generation.models import Generation, Output
from imagen.kit.db import new_id
from imagen.privacy.erasure import erase_user
from imagen.safety.service import case_service
from tests.conftest import signup

PAGES = ("/admin/cases", "/admin/hash-banks", "/admin/users")
EVIDENCE_BYTES = b"\x89PNG\r\n\x1a\n stand-in bytes of a suspect upload"
PDQ = "f0" * 32
MD5_A, MD5_B = "0" * 31 + "a", "0" * 31 + "b"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# ---- a small DOM over the stdlib parser, to assert on elements rather than on substrings ----
class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None = None) -> None:
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def iter(self):
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        def matches(node: Node) -> bool:
            if tag and node.tag != tag:
                return False
            for key, value in attrs.items():
                key = key.rstrip("_").replace("_", "-")
                actual = node.attrs.get(key)
                if key == "class":
                    if value not in (actual or "").split():
                        return False
                elif actual != value:
                    return False
            return True
        return [n for n in self.iter() if matches(n)]

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'} {attrs}>"
        return found[0]

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return " ".join(" ".join(parts).split())


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = self.current = Node("#root", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def dom(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    return builder.root


def page(client: TestClient, url: str) -> Node:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return dom(r.text)


def nav_links(client: TestClient) -> set[str]:
    return {a.attrs["href"] for a in page(client, "/gallery").find("nav").find_all("a")}


# ---- people and cases ----
def set_role(app, email: str, role: str) -> None:
    with app.state.services.db.transaction() as s:
        s.scalars(select(User).where(User.email == email)).one().role = role


def person(new_client, app, email: str, role: str = "user") -> TestClient:
    c = new_client()
    signup(c, email)
    if role != "user":
        set_role(app, email, role)
    return c


@pytest.fixture
def moderator(app, new_client) -> TestClient:
    return person(new_client, app, "mod@example.com", "moderator")


@pytest.fixture
def admin(app, new_client) -> TestClient:
    return person(new_client, app, "root@example.com", "admin")


def user_id(app, email: str) -> str:
    with app.state.services.db.transaction() as s:
        return s.scalars(select(User.id).where(User.email == email)).one()


def hash_match_case(app, settings, email: str) -> str:
    """What checks.py records for a matching upload: a case with preserved, quarantined evidence, and a suspension."""
    match = SimpleNamespace(bank_id="b1", bank_name="ncmec-pdq", hash_type="pdq", distance=12, matched_value=PDQ)
    with app.state.services.db.transaction() as s:
        case = case_service.record_hash_match(
            s, user_id=user_id(app, email), source="upload", match=match, settings=settings,
            quarantine=app.state.services.safety.quarantine, data=EVIDENCE_BYTES, subject_type="asset_upload",
            subject_id=None, ip_address="203.0.113.7", filename="beach.png", content_type="image/png", pdq=PDQ)
        return case.id


def own_output(app, email: str) -> str:
    """A finished generation with one output, written directly (the pages don't need a real image)."""
    uid = user_id(app, email)
    gen_id, output_id = new_id(), new_id()
    with app.state.services.db.transaction() as s:
        s.add(Generation(id=gen_id, user_id=uid, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                         params={"prompt": "a red lighthouse", "negative_prompt": "fog"}, checkpoint="imagen-tiny",
                         checkpoint_sha256="0" * 64, models=[], consent_model_improvement=False, status="succeeded"))
        s.flush()
        s.add(Output(id=output_id, generation_id=gen_id, user_id=uid, index=0, blob_key=f"outputs/{output_id}.png",
                     width=64, height=64, seed=42, size_bytes=100))
    return output_id


def case_row(tree: Node, case_id: str) -> Node | None:
    rows = tree.find_all("tr", data_case_id=case_id)
    return rows[0] if rows else None


def cell(row: Node, name: str) -> str:
    return row.find("td", class_=name).text


# ---- access ----
def test_signed_out_visitors_are_sent_to_login(client):
    for url in (*PAGES, "/admin/cases/anything"):
        r = client.get(url, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/login"), url


def test_plain_users_get_the_not_found_page_and_no_links(user_client):
    for url in (*PAGES, "/admin/cases/anything"):
        assert user_client.get(url).status_code == 404, url
    assert not nav_links(user_client) & set(PAGES)


def test_moderators_see_the_queue_but_not_the_banks(moderator):
    assert moderator.get("/admin/cases").status_code == 200
    assert moderator.get("/admin/hash-banks").status_code == 404
    assert moderator.get("/admin/users").status_code == 404
    links = nav_links(moderator)
    assert "/admin/cases" in links and not links & {"/admin/hash-banks", "/admin/users"}


def test_admins_see_both_pages_and_links(admin):
    for url in PAGES:
        assert admin.get(url).status_code == 200, url
    assert set(PAGES) <= nav_links(admin)


# ---- the queue ----
def test_queue_lists_cases_filters_them_and_names_erased_accounts(app, settings, client, moderator, new_client):
    ada = person(new_client, app, "ada@example.com")
    person(new_client, app, "eve@example.com")
    matched = hash_match_case(app, settings, "eve@example.com")
    r = ada.post("/api/v1/reports", json={"output_id": own_output(app, "ada@example.com"), "reason": "looks wrong"})
    assert r.status_code == 201, r.text
    reported = r.json()["id"]

    queue = page(moderator, "/admin/cases")
    row = case_row(queue, matched)
    assert row is not None
    assert (cell(row, "kind"), cell(row, "status"), cell(row, "account")) == ("hash_match", "open", "eve@example.com")
    assert "matched a pdq hash bank entry" in cell(row, "summary")
    assert row.find("a").attrs["href"] == f"/admin/cases/{matched}"
    row = case_row(queue, reported)
    assert (cell(row, "kind"), cell(row, "status"), cell(row, "account")) == ("user_report", "open", "ada@example.com")
    assert "looks wrong" in cell(row, "summary")

    kind_only = page(moderator, "/admin/cases?kind=hash_match")
    assert case_row(kind_only, matched) is not None and case_row(kind_only, reported) is None
    assert "selected" in kind_only.find("option", value="hash_match").attrs

    # Dismissed cases leave the default (open) view; "all" and their own status still list them.
    done = moderator.post(f"/api/v1/admin/cases/{reported}/actions", json={"action": "dismiss", "note": "fine"})
    assert done.status_code == 200, done.text
    assert case_row(page(moderator, "/admin/cases"), reported) is None
    everything = page(moderator, "/admin/cases?status=all")
    assert cell(case_row(everything, reported), "status") == "dismissed"
    assert case_row(everything, matched) is not None
    dismissed = page(moderator, "/admin/cases?status=dismissed")
    assert case_row(dismissed, reported) is not None and case_row(dismissed, matched) is None
    assert case_row(page(moderator, "/admin/cases?status=bogus"), matched) is not None  # unknown: open

    # The case outlives the account (legal hold): the queue says the account is gone.
    services = app.state.services
    erase_user(services.db, services.blobs, services.executor, user_id(app, "eve@example.com"), settings=settings)
    assert cell(case_row(page(moderator, "/admin/cases"), matched), "account") == "eve@example.com (erased)"


# ---- a case ----
def test_case_shows_evidence_and_audit_log_but_never_an_image(app, settings, moderator, new_client):
    person(new_client, app, "eve@example.com")
    case_id = hash_match_case(app, settings, "eve@example.com")
    r = moderator.post(f"/api/v1/admin/cases/{case_id}/actions", json={"action": "restore", "note": "false match"})
    assert r.status_code == 200, r.text

    r = moderator.get(f"/admin/cases/{case_id}")
    assert r.status_code == 200
    tree = dom(r.text)
    evidence = tree.find("article", class_="evidence")
    assert evidence.find("dd", class_="sha256").text == hashlib.sha256(EVIDENCE_BYTES).hexdigest()
    assert evidence.find("dd", class_="md5").text == hashlib.md5(EVIDENCE_BYTES).hexdigest()
    assert evidence.find("dd", class_="pdq").text == PDQ
    assert evidence.find("dd", class_="ip").text == "203.0.113.7"
    assert evidence.find("dd", class_="filename").text == "beach.png"
    assert evidence.find("dd", class_="size").text == f"{len(EVIDENCE_BYTES)} bytes"
    match = evidence.find("dd", class_="match").text
    assert "ncmec-pdq" in match and "pdq" in match and "distance 12" in match
    assert evidence.find("dd", class_="quarantined").text.startswith("yes")
    assert tree.find("dd", id="case-status").text == "restored"

    # The audit log: the system's opening and automatic suspension, then the moderator's restore with its note.
    log = [(e.find("td", class_="actor").text, e.find("td", class_="action").text, e.find("td", class_="note").text,
            e.find("td", class_="result").text) for e in tree.find_all("tr", class_="audit-entry")]
    assert [entry[:2] for entry in log] == [("system", "open"), ("system", "suspend"),
                                           ("mod@example.com", "restore")]
    assert log[2][2:] == ("false match", "restored")

    # No image of any kind, no way to fetch the quarantined bytes, and the page says why.
    assert tree.find_all("img") == [] and "<img" not in r.text.lower()
    assert "quarantine" not in " ".join(a.attrs.get("href") or "" for a in tree.find_all("a"))
    assert "never displayed" in tree.find(id="no-images").text

    buttons = {b.attrs["data-action"]: b for b in tree.find_all("button", class_="case-action")}
    assert set(buttons) == {"dismiss", "remove", "suspend", "restore", "report", "preserve", "escalate"}
    assert {a for a, b in buttons.items() if b.attrs.get("data-confirm") == "true"} == {"remove", "report"}
    assert tree.find("textarea", id="action-note").attrs["name"] == "note"
    # CSP: scripts only from files, no inline handlers or styles.
    scripts = tree.find_all("script")
    assert all(s.attrs.get("src") and not s.text for s in scripts)
    assert any(s.attrs["src"].endswith("/moderation.js") for s in scripts)
    assert not [n for n in tree.iter() if "style" in n.attrs or any(k.startswith("on") for k in n.attrs)]

    assert moderator.get("/admin/cases/no-such-case").status_code == 404


def test_a_reported_output_shows_its_prompt(app, moderator, user_client):
    output_id = own_output(app, "ada@example.com")
    gallery = page(user_client, "/gallery")
    button = gallery.find("button", class_="report-output")
    assert button.attrs["data-output-id"] == output_id
    r = user_client.post("/api/v1/reports", json={"output_id": output_id, "reason": "not what I asked for"})
    assert r.status_code == 201, r.text

    tree = page(moderator, f"/admin/cases/{r.json()['id']}")
    evidence = tree.find("article", class_="evidence")
    assert evidence.find("dd", class_="prompt").text == "a red lighthouse"
    assert evidence.find("dd", class_="negative-prompt").text == "fog"
    assert evidence.find("dd", class_="quarantined").text == "no"
    assert tree.find_all("img") == []


# ---- hash banks ----
def test_bank_page_lists_banks_with_counts_and_toggles(admin):
    r = admin.post("/api/v1/admin/hash-banks",
                   json={"name": "te-md5", "hash_type": "md5", "source": "ThreatExchange", "hashes": [MD5_A, MD5_B]})
    assert r.status_code == 201, r.text
    bank_id = r.json()["bank"]["id"]

    row = page(admin, "/admin/hash-banks").find("tr", data_bank_id=bank_id)
    assert (cell(row, "name"), cell(row, "type"), cell(row, "source"), cell(row, "count"), cell(row, "enabled")) \
        == ("te-md5", "md5", "ThreatExchange", "2", "yes")
    toggle = row.find("button", class_="bank-toggle")
    assert (toggle.text, toggle.attrs["data-enabled"]) == ("Disable", "false")

    assert admin.patch(f"/api/v1/admin/hash-banks/{bank_id}", json={"enabled": False}).status_code == 200
    tree = page(admin, "/admin/hash-banks")
    row = tree.find("tr", data_bank_id=bank_id)
    assert cell(row, "enabled") == "no" and row.find("button", class_="bank-toggle").attrs["data-enabled"] == "true"

    # The import form posts a file (multipart) with the fields the import API reads.
    form = tree.find("form", id="bank-import")
    assert {n.attrs["name"] for n in form.find_all() if n.tag in ("input", "select")} \
        == {"name", "hash_type", "source", "file"}
    assert [o.attrs["value"] for o in form.find("select").find_all("option")] == ["pdq", "md5", "sha256"]
    assert form.find("input", name="file").attrs["type"] == "file"


def test_queue_pages_through_every_case_newest_first(app, settings, moderator, new_client, monkeypatch):
    from imagen.safety import pages

    person(new_client, app, "eve@example.com")
    with app.state.services.db.transaction() as s:
        opened = [case_service.open_case(s, kind="user_report", user_id=user_id(app, "eve@example.com"),
                                         settings=settings, summary=f"report {i}").id for i in range(5)]
    # The API: keyset pages of two, no case twice, none left out.
    seen, before = [], None
    while True:
        r = moderator.get("/api/v1/admin/cases", params={"limit": 2, **({"before": before} if before else {})})
        assert r.status_code == 200, r.text
        batch = [c["id"] for c in r.json()]
        seen += batch
        if len(batch) < 2:
            break
        before = batch[-1]
    assert sorted(seen) == sorted(opened) and len(seen) == len(set(seen)) == 5
    assert moderator.get("/api/v1/admin/cases", params={"limit": 501}).status_code == 422
    assert moderator.get("/api/v1/admin/cases", params={"before": "nope"}).status_code == 404

    # The page: "Older cases" while a page is full, each case once across the pages.
    monkeypatch.setattr(pages, "QUEUE_PAGE", 2)
    url, listed = "/admin/cases", []
    for _ in range(5):
        tree = page(moderator, url)
        listed += [row.attrs["data-case-id"] for row in tree.find_all("tr") if "data-case-id" in row.attrs]
        older = tree.find_all("a", id="cases-older")
        if not older:
            break
        url = older[0].attrs["href"]
        assert "before=" in url
    assert listed == seen  # same order as the API: newest first
    stale = page(moderator, "/admin/cases?before=gone")  # a purged case in an old link: back to the newest
    assert [r.attrs["data-case-id"] for r in stale.find_all("tr") if "data-case-id" in r.attrs] == seen[:2]


def test_accounts_page_lists_searches_and_changes_roles(app, admin, new_client):
    person(new_client, app, "eve@example.com")
    person(new_client, app, "ev_il%@example.com")
    tree = page(admin, "/admin/users")
    rows = {cell(r, "email"): r for r in tree.find_all("tr") if "data-user-id" in r.attrs}
    assert {"eve@example.com", "ev_il%@example.com"} <= set(rows)
    eve = rows["eve@example.com"]
    assert cell(eve, "state") == "active"
    assert [o.attrs["value"] for o in eve.find_all("option") if "selected" in o.attrs] == ["user"]
    # A search treats % and _ as plain characters.
    found = page(admin, "/admin/users?q=_il%25")
    assert [cell(r, "email") for r in found.find_all("tr") if "data-user-id" in r.attrs] == ["ev_il%@example.com"]

    r = admin.put(f"/api/v1/admin/users/{eve.attrs['data-user-id']}/role", json={"role": "moderator"})
    assert r.status_code == 200 and r.json()["role"] == "moderator"
    listed = admin.get("/api/v1/admin/users", params={"q": "eve@"}).json()
    assert [(u["email"], u["role"]) for u in listed] == [("eve@example.com", "moderator")]
    # The only admin can't demote themselves (nobody could manage the service then); their own select is disabled.
    me = next(r for r in page(admin, "/admin/users").find_all("tr")
              if "data-user-id" in r.attrs and cell(r, "email") == "root@example.com")
    assert "disabled" in me.find("select").attrs
    demote = admin.put(f"/api/v1/admin/users/{me.attrs['data-user-id']}/role", json={"role": "user"})
    assert demote.status_code == 409 and "only admin" in demote.text
    assert admin.get("/api/v1/admin/users", params={"limit": 0}).status_code == 422
