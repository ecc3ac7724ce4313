"""What can go wrong with a request, as an exception carrying its HTTP status, a short kind (a metrics label)
and a message naming the problem; the app turns it into ``{"error": message, "kind": kind}``."""

from __future__ import annotations


class RequestProblem(Exception):
    """A request the service refuses: 4xx for the client's fault, 503 for overload or not ready."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "kind": self.kind}


def bad_request(kind: str, message: str) -> RequestProblem:
    return RequestProblem(400, kind, message)


def overloaded(retry_after_s: int = 1) -> RequestProblem:
    return RequestProblem(503, "overloaded", "the server is at capacity (its queue is full); retry shortly",
                          {"Retry-After": str(retry_after_s)})
