"""The OpenAPI viewer at ``/schema``, served with its own scripts and stylesheets.

Litestar's viewers load their JavaScript and CSS from public CDNs, so on a plant network or
a laptop offline ``/schema`` was a blank page (issue 12). Swagger UI's files come from the
``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1) and are served
under ``/schema/assets/``; the document itself stays at ``/schema/openapi.json`` (and
``.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from .auth import ACCESS, Access

SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at ``/schema`` (and ``/schema/swagger``) with local assets, and the
    document as JSON and YAML."""
    return [
        SwaggerRenderPlugin(
            path=["/", "/swagger"],
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        ),
        JsonRenderPlugin(),
        YamlRenderPlugin(),
    ]


def asset_routes() -> list[Router]:
    """The viewer's files under ``/schema/assets/``, public like the document (cached by
    the browser for a day: they change only with the package)."""
    return [
        create_static_files_router(
            path="/assets",
            directories=[Path(str(swagger_ui_path))],
            name="schema-assets",
            opt={ACCESS: Access.PUBLIC},
            include_in_schema=False,
            cache_control=CacheControlHeader(max_age=86400, public=True),
        )
    ]
