"""More like this, the collection pages, folders and near-duplicate groups, over HTTP against a
real `cfcd serve` process (the read-only server of conftest: no upload directory)."""

from __future__ import annotations

import httpx
import pytest


def ids_of(url) -> dict[str, int]:
    items = httpx.get(f"{url}/images", params={"limit": 100}).json()["items"]
    return {item["path"]: item["id"] for item in items}


def test_similar_uses_the_stored_descriptor_and_leaves_the_image_out(server, photos):
    own = ids_of(server)["p03.png"]
    res = httpx.get(f"{server}/images/{own}/similar", params={"k": 5}, timeout=60)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["query"] == {"id": own} and body["k"] == 5
    hits = body["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and own not in [h["id"] for h in hits]
    assert all(h["thumbnail_url"] == f"/thumbnails/{h['id']}" for h in hits)
    # The same ranking as searching with the photo's file, less the photo itself.
    searched = httpx.post(f"{server}/search", files={"image": ("q.png", photos[3].read_bytes(), "image/png")},
                          data={"k": "6"}, timeout=60).json()["results"]
    by_upload = [h for h in searched if h["id"] != own][:5]
    assert [round(h["score"], 4) for h in hits] == [round(h["score"], 4) for h in by_upload]
    everything = httpx.get(f"{server}/images/{own}/similar", params={"k": 1000}, timeout=60).json()["results"]
    assert len(everything) == 11  # every other image, never itself


def test_similar_refuses_bad_ids_and_k(server):
    assert httpx.get(f"{server}/images/999999/similar").status_code == 404
    assert "no image with id 999999" in httpx.get(f"{server}/images/999999/similar").json()["detail"]
    for bad in ("-1", "abc", "1.5", str(2**63)):
        assert httpx.get(f"{server}/images/{bad}/similar").status_code == 422, bad
    assert httpx.get(f"{server}/images/0/similar", params={"k": 0}).status_code == 422
    assert httpx.get(f"{server}/images/0/similar", params={"k": 1001}).status_code == 422


def test_collection_pages_in_a_stable_order(server):
    pages, offset = [], 0
    while True:
        body = httpx.get(f"{server}/images", params={"offset": offset, "limit": 5}).json()
        assert body["total"] == 12 and body["limit"] == 5
        if not body["items"]:
            break
        pages.append(body["items"])
        offset += 5
    assert [len(p) for p in pages] == [5, 5, 2]
    ids = [item["id"] for page in pages for item in page]
    assert ids == sorted(ids) and len(set(ids)) == 12
    assert [item["path"] for page in pages for item in page] == [f"p{i:02d}.png" for i in range(12)]
    item = pages[0][0]
    assert item["thumbnail_url"] == f"/thumbnails/{item['id']}" and item["similar_url"] == f"/images/{item['id']}/similar"
    only = httpx.get(f"{server}/images", params={"prefix": "p1"}).json()
    assert only["total"] == 2 and [i["path"] for i in only["items"]] == ["p10.png", "p11.png"]
    assert httpx.get(f"{server}/images", params={"prefix": "nowhere/"}).json() == {**only, "total": 0, "items": [], "prefix": "nowhere/"}
    for bad in ({"offset": -1}, {"limit": 0}, {"limit": 501}, {"offset": "x"}):
        assert httpx.get(f"{server}/images", params=bad).status_code == 422, bad
    folders = httpx.get(f"{server}/folders").json()
    assert folders["images"] == 12 and folders["folders"] == [{"folder": "", "images": 12}]


def test_duplicate_groups(server):
    body = httpx.get(f"{server}/duplicates", params={"threshold": -1}, timeout=60).json()
    # At the lowest threshold every image joins one group (each is some image's neighbour).
    assert body["images"] == 12 and len(body["groups"]) == 1 and len(body["groups"][0]["ids"]) == 12
    group = body["groups"][0]
    assert group["tier"] == "similar" and body["tiers"] == ["exact", "near", "similar"]
    # Each member with what a person decides on, and the suggested keeper with its reason.
    item = group["items"][0]
    assert item["thumbnail_url"].startswith("/thumbnails/") and item["image_url"] == f"/images/{item['id']}"
    assert item["format"] == "PNG" and item["width"] > 0 and item["file_size"] > 0 and item["date"]
    assert group["keep"] in group["ids"] and group["why"]
    assert {m["id"]: m["score"] for m in group["items"]}[group["keep"]] == 1.0
    assert len(group["pairs"]) == 12 * 11 // 2 and {p["tier"] for p in group["pairs"]} == {"similar"}
    # Twelve different generated images: no exact or near copies among them.
    assert httpx.get(f"{server}/duplicates", params={"threshold": -1, "tiers": "exact,near"}, timeout=60).json()["groups"] == []
    kept = httpx.get(f"{server}/duplicates", params={"threshold": -1, "prefer": ["folder:nowhere", "older"]}, timeout=60).json()
    # No photo in a folder "nowhere": the rule leaves none out, and the keeper is the default one.
    assert kept["prefer"] == ["folder:nowhere", "older"] and kept["groups"][0]["keep"] == group["keep"]
    assert "nowhere" not in kept["groups"][0]["why"]
    assert httpx.get(f"{server}/duplicates", params={"threshold": 1}, timeout=60).json()["groups"] == []
    assert httpx.get(f"{server}/duplicates", params={"threshold": 1.5}).status_code == 422
    res = httpx.get(f"{server}/duplicates", params={"tiers": "exact,same"})
    assert res.status_code == 400 and res.json()["detail"].startswith("tier 'same': use one or more of exact,near,similar")
    res = httpx.get(f"{server}/duplicates", params={"prefer": "biggest"})
    assert res.status_code == 400 and "keep rule 'biggest'" in res.json()["detail"]


def test_writes_refused_on_a_read_only_server(server, photos):
    assert httpx.get(f"{server}/health").json()["writable"] is False
    res = httpx.post(f"{server}/images", files={"image": ("x.png", photos[0].read_bytes(), "image/png")})
    assert res.status_code == 403 and "--upload-dir" in res.json()["detail"]
    res = httpx.delete(f"{server}/images/0")
    assert res.status_code == 403 and "--upload-dir" in res.json()["detail"]
    assert httpx.get(f"{server}/health").json()["images"] == 12


@pytest.mark.parametrize("host, key, upload_dir, allowed", [
    ("127.0.0.1", None, "up", True), ("0.0.0.0", None, "up", False), ("0.0.0.0", "k", "up", True),
    ("127.0.0.1", None, None, False), ("::1", None, "up", True)])
def test_who_may_write(host, key, upload_dir, allowed):
    from cfcd.serve.settings import ServeSettings

    reason = ServeSettings("idx", threads=1, host=host, api_key=key, upload_dir=upload_dir).read_only_reason
    assert (reason is None) == allowed
    if not allowed:
        assert ("--api-key" if upload_dir else "--upload-dir") in reason
    assert "--read-only" in ServeSettings("idx", threads=1, upload_dir="up", read_only=True).read_only_reason


def test_every_route_in_the_schema_with_its_statuses(server):
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    want = {
        ("/images", "get"): {"200", "401", "422"},
        ("/images", "post"): {"200", "201", "400", "401", "403", "409", "413", "422"},
        ("/images/{image_id}", "delete"): {"200", "401", "403", "404", "422"},
        ("/images/{image_id}/similar", "get"): {"200", "401", "404", "422"},
        ("/folders", "get"): {"200", "401"},
        ("/duplicates", "get"): {"200", "400", "401", "422"},
        ("/duplicates/ignore", "post"): {"200", "401", "403", "404", "422"},
        ("/duplicates/trash", "post"): {"200", "401", "403", "404", "422"},
    }
    for (path, method), statuses in want.items():
        assert statuses <= set(paths[path][method]["responses"]), (path, method, paths[path][method]["responses"])
