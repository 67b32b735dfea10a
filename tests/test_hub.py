"""Hub push and load, exercised against a stand-in Hub server on loopback (no network).

The server implements the endpoints huggingface_hub 2.x calls for create_repo / upload_folder (whoami, repos/create,
preupload, commit) and for snapshot_download (revision info, tree, resolve), and records what it received.
"""

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest
import torch
import yaml
from conftest import example_inputs, tiny_bert, tiny_gpt2

from isogauss_hf import IsoGaussConfig, IsoGaussModel, get_isogauss_model
from isogauss_hf.hub import build_model_card, checkpoint_files, load_results, push_checkpoint, resolve_token

TOKEN = "hf_standin_write_token"


class StandInHub:
    """A minimal Hub: repos in memory, files committed inline (upload mode "regular"), card YAML validated."""

    def __init__(self, token=TOKEN, user="tester"):
        self.token, self.user = token, user
        self.repos = {}  # repo_id -> {"private", "files": {path: bytes}, "sha"}
        self.commits = []  # {"repo", "summary", "paths", "auth"}
        self.requests = []  # (method, path)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, code, body=b"", ctype="application/json", headers=None):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def body(self):
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def authorized(self):
                return self.headers.get("authorization") == f"Bearer {hub.token}"

            def do_GET(self):
                hub.route(self)

            do_HEAD = do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def route(self, h):
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path))
        p = path.strip("/").split("/")
        not_found = {"X-Error-Code": "RepoNotFound"}
        if path == "/api/whoami-v2":
            if not h.authorized():
                return h.send(401, {"error": "Invalid credentials"})
            return h.send(200, {"name": self.user, "type": "user", "auth": {"accessToken": {"role": "write"}}})
        if path == "/api/validate-yaml" and h.command == "POST":  # upload_folder checks README.md metadata
            content = json.loads(h.body())["content"]
            try:
                meta = yaml.safe_load(content.split("---\n")[1]) if content.startswith("---\n") else None
            except yaml.YAMLError as e:
                return h.send(400, {"errors": [{"message": str(e)}], "warnings": []})
            warnings = [] if meta else [{"message": "empty or missing yaml metadata"}]
            return h.send(200, {"errors": [], "warnings": warnings})
        if path == "/api/repos/create" and h.command == "POST":
            if not h.authorized():
                return h.send(401, {"error": "Invalid credentials"})
            data = json.loads(h.body())
            rid = f"{data.get('organization') or self.user}/{data['name']}"
            repo = self.repos.setdefault(rid, {"files": {}, "sha": "0" * 40})
            repo["private"] = data.get("visibility") == "private"
            return h.send(200, {"url": f"{self.url}/{rid}"})
        if p[:2] == ["api", "models"] and len(p) >= 6 and p[4] in ("preupload", "commit"):
            rid = f"{p[2]}/{p[3]}"
            if not h.authorized():
                return h.send(401, {"error": "Invalid credentials"})
            if rid not in self.repos:
                return h.send(404, {"error": "Repository not found"}, headers=not_found)
            body = h.body()
            if p[4] == "preupload":
                files = json.loads(body)["files"]
                return h.send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
            repo, summary, paths = self.repos[rid], None, []
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item["key"] == "header":
                    summary = item["value"]["summary"]
                elif item["key"] == "file":
                    repo["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    paths.append(item["value"]["path"])
                else:
                    return h.send(400, {"error": f"stand-in hub does not support {item['key']}"})
            repo["sha"] = hashlib.sha1(repr(sorted(repo["files"].items())).encode()).hexdigest()
            self.commits.append({"repo": rid, "summary": summary, "paths": paths,
                                 "auth": h.headers.get("authorization")})
            return h.send(200, {"commitUrl": f"{self.url}/{rid}/commit/{repo['sha']}", "commitOid": repo["sha"]})
        if p[:2] == ["api", "models"] and len(p) >= 4:
            repo = self.repos.get(f"{p[2]}/{p[3]}")
            if repo is None:
                return h.send(404, {"error": "Repository not found"}, headers=not_found)
            if len(p) >= 6 and p[4] == "tree":
                return h.send(200, [{"type": "file", "path": k, "size": len(v), "oid": hashlib.sha1(v).hexdigest()}
                                    for k, v in sorted(repo["files"].items())])
            return h.send(200, {"id": f"{p[2]}/{p[3]}", "sha": repo["sha"], "private": repo["private"],
                                "siblings": [{"rfilename": k} for k in sorted(repo["files"])]})
        if len(p) >= 5 and p[2] == "resolve":
            repo = self.repos.get(f"{p[0]}/{p[1]}")
            if repo is None:
                return h.send(404, {"error": "Repository not found"}, headers=not_found)
            name = "/".join(p[4:])
            if name not in repo["files"]:
                return h.send(404, {"error": "Entry not found"},
                              headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo["sha"]})
            data = repo["files"][name]
            return h.send(200, data, ctype="application/octet-stream",
                          headers={"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": repo["sha"]})
        return h.send(404, {"error": f"stand-in hub: unhandled {h.command} {path}"})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def block_remote_hosts(monkeypatch):
    """Any name resolution other than loopback fails loudly: these tests must never reach the network."""
    import socket

    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"test tried to reach {host!r}: only the stand-in hub on loopback is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A stand-in Hub, with HF_ENDPOINT (env and huggingface_hub's import-time constants) pointing at it."""
    from huggingface_hub import constants

    block_remote_hosts(monkeypatch)
    server = StandInHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-login" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.close()


def _tokenizer(tmp_path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(path))


def _checkpoint(tmp_path, noise="seeded"):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise=noise, rule="gdu", seed=3))
    model.eval()
    out = tmp_path / "ckpt"
    model.save_pretrained(str(out))
    return model, out


RESULTS = {"metrics": {"eval_accuracy": 0.875, "eval_loss": 0.41, "eval_runtime": 3.2}, "dataset": "ag_news",
           "base_model": "google-bert/bert-base-uncased"}


def _card_parts(text):
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_push_checkpoint_uploads_checkpoint_files_and_card(hub, tmp_path):
    model, out = _checkpoint(tmp_path)
    _tokenizer(tmp_path).save_pretrained(str(out))
    (out / "results.json").write_text(json.dumps(RESULTS))
    (out / "training_args.bin").write_bytes(b"pickle, never uploaded")
    (out / "optimizer.pt").write_bytes(b"pickle, never uploaded")
    (out / "checkpoint-10").mkdir()
    (out / "checkpoint-10" / "config.json").write_text("{}")

    info = push_checkpoint(str(out), "tester/tiny-isogauss", token=TOKEN, private=True, commit_message="first push")

    repo = hub.repos["tester/tiny-isogauss"]
    assert repo["private"] is True
    assert [c["summary"] for c in hub.commits] == ["first push"] and hub.commits[0]["auth"] == f"Bearer {TOKEN}"
    uploaded = set(repo["files"])
    assert {"model.safetensors", "isogauss_config.json", "config.json", "README.md", "results.json",
            "tokenizer.json", "tokenizer_config.json"} <= uploaded
    assert not {n for n in uploaded if n.endswith((".bin", ".pt")) or "/" in n}, uploaded
    assert uploaded == set(checkpoint_files(str(out)))
    for name in ("model.safetensors", "isogauss_config.json", "config.json"):
        assert repo["files"][name] == (out / name).read_bytes()
    assert info.oid == repo["sha"]

    meta, body = _card_parts(repo["files"]["README.md"].decode())
    assert meta["library_name"] == "isogauss-hf"
    assert meta["base_model"] == "google-bert/bert-base-uncased"
    assert meta["datasets"] == ["ag_news"]
    assert meta["metrics"] == ["accuracy", "loss"]  # runtime is not a metric
    assert {"isogauss-hf", "gaussian-layers", "bert", "gdu"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-classification"
    result_metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert result_metrics == {"accuracy": 0.875, "loss": 0.41}
    assert 'model = IsoGaussModel.from_pretrained("tester/tiny-isogauss")' in body
    assert 'AutoTokenizer.from_pretrained("tester/tiny-isogauss")' in body
    report = model.parameter_report()
    block = report["per_block"]["2"]
    assert f"| 2 | 6 | {block['replaced_weights']:,} | {block['gaussian_parameters']:,} |" in body
    ratio = report["dense_model_parameters"] / report["isogauss_model_parameters"]
    assert f"compression ratio {ratio:.3f}x" in body
    assert "| eval_accuracy | 0.8750 |" in body
    assert (out / "README.md").read_bytes() == repo["files"]["README.md"]


def test_model_push_to_hub_uses_hf_token_and_hf_endpoint_from_env(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # only the env var (read at call time) is right
    model = get_isogauss_model(tiny_gpt2(), IsoGaussConfig(layers=[1], noise="seeded", rule="gdu"))
    model.push_to_hub("tiny-gpt2-isogauss", results={"eval_loss": 2.5})  # no namespace: the token's user
    repo = hub.repos["tester/tiny-gpt2-isogauss"]
    assert repo["private"] is False
    assert {"model.safetensors", "isogauss_config.json", "config.json", "generation_config.json",
            "README.md"} <= set(repo["files"])
    meta, body = _card_parts(repo["files"]["README.md"].decode())
    assert meta["pipeline_tag"] == "text-generation" and meta["metrics"] == ["loss"]
    assert 'IsoGaussModel.from_pretrained("tiny-gpt2-isogauss")' in body
    assert hub.commits[0]["auth"] == f"Bearer {TOKEN}"


def test_missing_token_is_one_clear_error_before_any_request(hub, tmp_path):
    _, out = _checkpoint(tmp_path)
    with pytest.raises(RuntimeError, match=r"no Hugging Face token found: set HF_TOKEN=.*hf auth login") as e:
        push_checkpoint(str(out), "tester/x")
    assert "\n" not in str(e.value)
    with pytest.raises(RuntimeError, match="no Hugging Face token"):
        get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[1])).push_to_hub("tester/x")
    assert hub.requests == [] and hub.repos == {}
    assert resolve_token("hf_explicit") == "hf_explicit"


def test_wrong_token_is_refused_by_the_server(hub, tmp_path):
    from huggingface_hub.errors import HfHubHTTPError

    _, out = _checkpoint(tmp_path)
    with pytest.raises(HfHubHTTPError):
        push_checkpoint(str(out), "tester/x", token="hf_wrong")
    assert hub.repos == {}


@pytest.mark.parametrize(
    "setup, repo_id, match",
    [
        (lambda d: None, "tester/a/b", "repo_id must look like"),
        (lambda d: (d / "isogauss_config.json").unlink(), "tester/x", r"not an isogauss-hf compressed checkpoint \(missing \['isogauss_config.json'\]\)"),
        (lambda d: (d / "model.safetensors").unlink(), "tester/x", r"missing \['model.safetensors'\]"),
    ],
)
def test_push_refuses_bad_input(hub, tmp_path, setup, repo_id, match):
    _, out = _checkpoint(tmp_path)
    setup(out)
    with pytest.raises(ValueError, match=match):
        push_checkpoint(str(out), repo_id, token=TOKEN)
    assert hub.requests == []


def test_from_pretrained_from_hub_then_offline_from_cache(hub, tmp_path):
    from huggingface_hub import constants

    model, out = _checkpoint(tmp_path)
    (out / "pytorch_model.bin").write_bytes(b"a pickle: never downloaded")
    push_checkpoint(str(out), "tester/tiny", token=TOKEN)
    hub.repos["tester/tiny"]["files"]["pytorch_model.bin"] = b"a pickle that a careless loader would fetch"
    x = example_inputs("bert")
    with torch.no_grad():
        expected = model(**x).logits

    loaded = IsoGaussModel.from_pretrained("tester/tiny")
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, expected)
    fetched = {p.rsplit("/resolve/", 1)[1].split("/", 1)[1] for m, p in hub.requests if m == "GET" and "/resolve/" in p}
    assert "model.safetensors" in fetched and not any(f.endswith(".bin") for f in fetched), fetched

    hub.close()  # the Hub is gone: only the cache can serve the next load
    constants.HF_HUB_OFFLINE = True  # restored by the fixture's monkeypatch
    again = IsoGaussModel.from_pretrained("tester/tiny", noise="seeded")
    with torch.no_grad():
        assert torch.equal(again(**x).logits, expected)


def test_auto_model_and_pipeline_from_a_hub_repo(hub, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    model, out = _checkpoint(tmp_path)
    _tokenizer(tmp_path).save_pretrained(str(out))
    push_checkpoint(str(out), "tester/native", token=TOKEN)
    x = example_inputs("bert")
    with torch.no_grad():
        expected = model(**x).logits
        loaded = AutoModelForSequenceClassification.from_pretrained("tester/native")
        assert isinstance(loaded, IsoGaussModel) and torch.equal(loaded(**x).logits, expected)
    pipe = pipeline("text-classification", model="tester/native")
    assert isinstance(pipe.model, IsoGaussModel) and len(pipe("w1 w2 w3")) == 1


def test_from_pretrained_unknown_repo_names_it(hub):
    with pytest.raises(OSError, match="'tester/nope' is not a local directory and could not be fetched"):
        IsoGaussModel.from_pretrained("tester/nope")


@pytest.mark.parametrize(
    "results, expected",
    [
        ({"eval_accuracy": 0.5, "epoch": 3.0, "eval_samples_per_second": 9.0, "note": "x"}, {"eval_accuracy": 0.5}),
        ({"metrics": {"rouge1": 0.3, "rougeL": 0.2}, "dataset": "samsum"}, {"rouge1": 0.3, "rougeL": 0.2}),
        ({"runs": [{"name": "dense", "gaussian": False, "metrics": {"accuracy": 0.9}},  # isogauss-finetune layout
                   {"name": "isogauss", "gaussian": True, "metrics": {"accuracy": 0.8, "loss": 0.5}}],
          "dataset": {"name": "bbc_news", "train": 10}, "recipe": {"task": "text-classification"}},
         {"accuracy": 0.8, "loss": 0.5}),
        ({}, {}),
    ],
)
def test_card_metrics_from_results(tmp_path, results, expected):
    model, out = _checkpoint(tmp_path)
    card = build_model_card(str(out), repo_id="u/m", results=results, report=model.parameter_report())
    meta, body = _card_parts(str(card))
    if expected:
        assert sorted(meta["metrics"]) == sorted(k.removeprefix("eval_") for k in expected)
        for k, v in expected.items():
            assert f"| {k} | {v:.4f} |" in body
        if "runs" in results:
            assert meta["datasets"] == ["bbc_news"]
            got = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
            assert got == expected and meta["model-index"][0]["results"][0]["task"]["type"] == "text-classification"
    else:
        assert "metrics" not in meta and "## Results" not in body


def test_card_without_report_loads_the_checkpoint_and_results_file(tmp_path):
    model, out = _checkpoint(tmp_path)
    (out / "results.json").write_text(json.dumps({"eval_accuracy": 0.75}))
    card = build_model_card(str(out))
    meta, body = _card_parts(str(card))
    assert meta["metrics"] == ["accuracy"]
    assert f"dense weights replaced: {model.parameter_report()['replaced_weights']:,}" in body
    assert 'IsoGaussModel.from_pretrained("' + str(out) + '")' in body
    assert "checkpoint format version 3; noise generator `philox4x32-10/box-muller-v1`" in body


def test_results_json_of_the_finetune_cli_is_found_in_the_parent(tmp_path):
    model, out = _checkpoint(tmp_path)  # tmp_path/ckpt
    (tmp_path / "results.json").write_text(json.dumps({"runs": [{"gaussian": True, "metrics": {"f1": 0.6}}]}))
    meta, body = _card_parts(str(build_model_card(str(out), report=model.parameter_report())))
    assert meta["metrics"] == ["f1"] and "| f1 | 0.6000 |" in body


def test_base_model_is_a_hub_id_never_a_local_path(tmp_path):
    from transformers import BertForSequenceClassification

    src = tmp_path / "local-bert"
    from conftest import tiny_bert as make

    make().save_pretrained(str(src))
    base = BertForSequenceClassification.from_pretrained(str(src))
    assert base.name_or_path == str(src)
    model = get_isogauss_model(base, IsoGaussConfig(layers=[1]))
    model.save_pretrained(str(tmp_path / "ckpt"))
    meta, _ = _card_parts(str(build_model_card(str(tmp_path / "ckpt"), report=model.parameter_report())))
    assert "base_model" not in meta
    model.base_model.name_or_path = "google-bert/bert-base-uncased"
    model.save_pretrained(str(tmp_path / "ckpt"))
    meta, _ = _card_parts(str(build_model_card(str(tmp_path / "ckpt"), report=model.parameter_report())))
    assert meta["base_model"] == "google-bert/bert-base-uncased"


def test_load_results_errors(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read results from"):
        load_results(str(bad))
    with pytest.raises(ValueError, match="results must be a dict"):
        load_results([1, 2])
    assert load_results(None, str(tmp_path)) == {}
