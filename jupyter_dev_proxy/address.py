"""Where things are on the hub: one object that knows the hub's origin, its base path, the user and the server.

    HubAddress.parse("https://host/jupyter/hub/home")   origin https://host, base /jupyter/
      .api("users")        /jupyter/hub/api/users         a raw path of the hub's REST API
      .page("token")       https://host/jupyter/hub/token a hub page to name to the user
      .server_prefix       /jupyter/user/alice/[dev/]     the user's server: the only place the proxy reaches
      .stopped_prefix      /jupyter/hub/user/alice/[dev/] where the hub redirects a stopped server's URLs

No other module spells ``hub/`` or ``user/``: a hub under a path (``c.JupyterHub.base_url``) is a matter of
``base`` alone. Names are escaped the way JupyterHub escapes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote

from yarl import URL

# The first path segments under the base that belong to JupyterHub: its own pages and API, and users' servers.
_HUB_SEGMENT, _USER_SEGMENT = "hub", "user"


def hub_escaped(name: str) -> str:
    """A user or server name as JupyterHub writes it in URLs."""
    return quote(name, safe="@~")


def base_path(path: str) -> str:
    """A base path in the one form the address uses: ``/``, or ``/jupyter/`` with both slashes."""
    return "/" + "".join(f"{segment}/" for segment in path.split("/") if segment)


@dataclass(frozen=True)
class HubAddress:
    """A hub (origin and base path) and, once the hub has said whose token this is, the user and server."""

    origin: URL  # scheme://host[:port], no path
    base: str = "/"  # the hub's base URL: "/" or "/jupyter/"
    user: str = ""  # empty only until the hub has said whose token this is, before any request is served
    server: str = ""  # a named server, or "" for the default one

    @classmethod
    def parse(cls, url: URL) -> HubAddress:
        """The hub at ``url``, as a user may paste it from the browser: ``https://host/jupyter/``,
        ``https://host/jupyter/hub/home`` or ``https://host/jupyter/user/alice/lab`` all mean the hub whose
        base is ``/jupyter/``: what comes before the first ``hub`` or ``user`` segment."""
        segments = [s for s in url.raw_path.split("/") if s]
        cut = next((i for i, s in enumerate(segments) if s in (_HUB_SEGMENT, _USER_SEGMENT)), len(segments))
        return cls(origin=url.origin(), base=base_path("/".join(segments[:cut])))

    def for_user(self, user: str) -> HubAddress:
        return replace(self, user=user)

    def __str__(self) -> str:
        """How messages name the hub: ``https://host`` or ``https://host/jupyter``."""
        return str(self.origin) + self.base.rstrip("/")

    # -- the hub's own pages and API ---------------------------------------------------------------------------

    @property
    def hub_prefix(self) -> str:
        """Everything of JupyterHub's own: its pages and API, and the stopped servers' placeholders."""
        return f"{self.base}{_HUB_SEGMENT}/"

    def api(self, path: str = "") -> str:
        """A raw path of the REST API: ``api()`` is the version endpoint, ``api("user")`` the token's owner."""
        return f"{self.hub_prefix}api/{path}" if path else f"{self.hub_prefix}api"

    def user_api(self) -> str:
        return self.api(f"users/{hub_escaped(self.user)}")

    def server_api(self) -> str:
        """The API of the user's server: start it (POST), follow its start (``/progress``)."""
        if self.server:
            return f"{self.user_api()}/servers/{hub_escaped(self.server)}"
        return f"{self.user_api()}/server"

    def page(self, name: str) -> str:
        """A hub page to send the user to, as a full URL: ``page("token")``, ``page("home")``."""
        return f"{self.origin}{self.hub_prefix}{name}"

    # -- the user's server --------------------------------------------------------------------------------------

    @property
    def users_prefix(self) -> str:
        return f"{self.base}{_USER_SEGMENT}/"

    @property
    def _server_part(self) -> str:
        part = f"{hub_escaped(self.user)}/"
        return part + f"{hub_escaped(self.server)}/" if self.server else part

    @property
    def server_prefix(self) -> str:
        """The user's server on the hub, escaped the way JupyterHub escapes it."""
        return self.users_prefix + self._server_part

    @property
    def stopped_prefix(self) -> str:
        """Where the hub sends a stopped server's URLs (it then answers 424, "not running")."""
        return f"{self.hub_prefix}{_USER_SEGMENT}/" + self._server_part

    @property
    def server_label(self) -> str:
        """How the banner and the log name the server: 'default server' or "named server 'dev'"."""
        return f"named server '{self.server}'" if self.server else "default server"

    @property
    def server_url(self) -> str:
        """The user's server as a full URL, for the banner and messages."""
        return f"{self.origin}{self.server_prefix}"

    def url(self, raw_path: str, raw_query: str = "") -> URL:
        """The full URL of a raw path (and query) on the hub, byte for byte as given."""
        return URL.build(scheme=self.origin.scheme, authority=self.origin.raw_authority,  # [::1] keeps []
                         path=raw_path, query_string=raw_query, encoded=True)
