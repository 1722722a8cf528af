"""`ApiError`: why the API refuses a call, as the HTTP status, the field at fault (None
when no one field is) and a message for people. The service raises it; the app turns it
into `{"error": message, "field": field}` with the status."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message

    def to_json(self) -> dict[str, str | None]:
        return {"error": self.message, "field": self.field}


def bad(field: str, message: str) -> ApiError:
    """400: a value the API cannot use, named."""
    return ApiError(400, field, f"{field}: {message}")
