"""The one LINSTOR client of the project and the typed REST shapes it reads."""

from .client import LinstorClient, parse_controllers
from .errors import EventsNotSupported, LinstorError, LinstorProtocolError, LinstorUnavailable

__all__ = ["EventsNotSupported", "LinstorClient", "LinstorError", "LinstorProtocolError", "LinstorUnavailable",
           "parse_controllers"]
