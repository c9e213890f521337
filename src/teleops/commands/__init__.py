"""One command from typed text to output: the steps (parse, resolve the host, authorize, step-up, approval, audit
and dispatch, send), the Outcome every caller presents, and the controller-side back end (docs/architecture.md)."""
