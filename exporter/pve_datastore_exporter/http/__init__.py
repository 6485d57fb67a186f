"""The HTTP stack: the listener (uvicorn), the ASGI front, basic auth and rate limit, TLS, the web
config, who may write, and the Flask app; assemble.py puts them together for `serve`."""

# Every answer carries them, the app's (app.py) and the front's own (front.py): declared once.
SECURITY_HEADERS = (("X-Frame-Options", "DENY"), ("Content-Security-Policy", "frame-ancestors 'none'"),
                    ("X-Content-Type-Options", "nosniff"))
