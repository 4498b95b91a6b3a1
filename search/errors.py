"""Errors a user can cause in `nas-search`; the CLI prints them as one line, exit code 1."""
from lut_db.errors import UserError


class SearchError(UserError):
    """Bad input to the search backend (data path, checkpoint, target, LUT slice...)."""
