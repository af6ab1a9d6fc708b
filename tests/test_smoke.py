from tests.conftest import TINY, wait_for


def test_generate_end_to_end(user_client):
    r = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "a cat", **TINY}})
    assert r.status_code == 202, r.text
    body = wait_for(user_client, r.json()["id"])
    assert body["status"] == "succeeded", body
    png = user_client.get(body["outputs"][0]["url"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
