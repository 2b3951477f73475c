"""The dashboard's routes on the real app (SQLite in a temp home): page, redirect, assets, no path escape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api.dashboard.dashboard import STATIC_DIR
from services.api.main import create_app
from services.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    home = tmp_path_factory.mktemp("dashboard-routes-home")
    app = create_app(Settings(home=home, admin_key="sk-dashboard-routes"))
    with TestClient(app) as test_client:
        yield test_client


def test_root_redirects_to_dashboard(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/dashboard"


def test_dashboard_page_needs_no_key_and_names_its_assets(client: TestClient) -> None:
    response = client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/dashboard/static/app.js">' in response.text
    assert "http://" not in response.text and "https://" not in response.text  # nothing from a CDN


@pytest.mark.parametrize("name", sorted(p.name for p in STATIC_DIR.iterdir() if p.suffix in {".js", ".css", ".svg"}))
def test_every_asset_is_served_with_its_type(client: TestClient, name: str) -> None:
    response = client.get(f"/dashboard/static/{name}")
    assert response.status_code == 200, name
    expected = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}[Path(name).suffix]
    assert response.headers["content-type"].startswith(expected)
    assert response.content == (STATIC_DIR / name).read_bytes()


def test_javascript_imports_only_shipped_modules() -> None:
    shipped = {p.name for p in STATIC_DIR.glob("*.js")}
    for script in STATIC_DIR.glob("*.js"):
        for module in re.findall(r'(?:from|import)\s+"([^"]+)"', script.read_text()):
            assert module.startswith("./") and module[2:] in shipped, f"{script.name} imports {module}"


@pytest.mark.parametrize("name", ["..%2Fdashboard.py", "%2E%2E%2F__init__.py", "missing.js", "index.py"])
def test_nothing_outside_the_static_assets_is_served(client: TestClient, name: str) -> None:
    assert client.get(f"/dashboard/static/{name}").status_code == 404


def test_package_data_ships_the_static_folder() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"dashboard/static/*"' in pyproject
