"""The OpenAPI viewer at ``/schema``, served with its own scripts and stylesheets.

Litestar's viewers load their JavaScript and CSS from public CDNs, so on a plant network or
a laptop offline ``/schema`` was a blank page (issue 12). Swagger UI's files come from the
``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1) and are served
under ``/schema/assets/``; the document itself stays at ``/schema/openapi.json`` (and
``.yaml``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from litestar import Router
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.static_files import create_static_files_router

from .auth import ACCESS, Access

log = logging.getLogger(__name__)

SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"


def swagger_ui_directory() -> Path | None:
    """Where the installed Swagger UI files are; None when the package is missing."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at ``/schema`` with local assets, and the document as JSON and YAML.
    Without the assets package: Litestar's defaults (CDN-loaded), with a warning."""
    if swagger_ui_directory() is None:
        log.warning("swagger-ui-bundle-v2 is not installed: /schema loads its viewer from a CDN")
        return []
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
    directory = swagger_ui_directory()
    if directory is None:
        return []
    from litestar.datastructures import CacheControlHeader

    return [
        create_static_files_router(
            path="/assets",
            directories=[directory],
            name="schema-assets",
            opt={ACCESS: Access.PUBLIC},
            include_in_schema=False,
            cache_control=CacheControlHeader(max_age=86400, public=True),
        )
    ]
