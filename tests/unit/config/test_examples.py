"""The configuration examples operators copy (mirror.example.yaml, the README, docs/) stay valid."""
import re
from pathlib import Path

import yaml

from registry_mirror.config.load import parse

ROOT = Path(__file__).resolve().parents[3]


def with_secret_files(data: dict, tmp_path: Path) -> dict:
    """Point every *_file secret at a real file: the examples name production paths."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    for section in [data.get("upstream", {}), data.get("scale") or {}, data.get("webhooks") or {},
                    *data.get("routes", [])]:
        for key in [k for k in section if k.endswith("_file")]:
            section[key] = str(secret)
    return data


def test_mirror_example_with_its_commented_sections(tmp_path):
    text = (ROOT / "mirror.example.yaml").read_text()
    cfg = parse(with_secret_files(yaml.safe_load(text), tmp_path), environ={"ARTIFACTORY_USER": "svc"})
    assert cfg.upstream.username == "svc" and cfg.routes == ()
    optional = text[text.index("# routes:"):]
    uncommented = re.sub(r"^# ?", "", optional, flags=re.MULTILINE)
    full = {**yaml.safe_load(text), **yaml.safe_load(uncommented)}
    cfg = parse(with_secret_files(full, tmp_path), environ={"ARTIFACTORY_USER": "svc"})
    assert [r.match_prefix for r in cfg.routes] == ["team-a", "hub"] and cfg.scale.advertise == "10.0.0.11"
    assert cfg.webhooks.listen.port == 8084 and cfg.webhooks.platforms == ("linux/amd64",)
    assert cfg.access.enabled and cfg.access.anonymous == ("public",)


def yaml_blocks(*paths: str) -> list[str]:
    return [b for p in paths for b in re.findall(r"```yaml\n(.*?)```", (ROOT / p).read_text(), flags=re.DOTALL)]


def test_readme_minimum_config(tmp_path):
    (minimum,) = yaml_blocks("README.md")
    cfg = parse(with_secret_files(yaml.safe_load(minimum), tmp_path), environ={"ARTIFACTORY_USER": "svc"})
    assert cfg.upstream.username == "svc" and cfg.routes == ()


def test_documented_yaml_examples(tmp_path):
    blocks = yaml_blocks("docs/configuration.md", "docs/webhooks.md")
    routes = next(yaml.safe_load(b) for b in blocks if "routes:" in b)
    cfg = parse(with_secret_files(routes, tmp_path))
    assert cfg.routes[1].upstream_name("hub/nginx") == "library/nginx" and cfg.routes[2].match_ns == ("docker.io",)
    scale = next(yaml.safe_load(b) for b in blocks if "scale:" in b)
    assert parse({**routes, **scale}).scale.enabled
    hooks = next(yaml.safe_load(b) for b in blocks if "webhooks:" in b)
    assert parse(with_secret_files({**routes, **hooks}, tmp_path)).webhooks.platforms == ("linux/amd64",)
