"""treadle built-in plugin: ``treadle ui``, a local web page over runs, models and jobs.

Needs the optional extra: ``pip install "treadle[ui]"`` (Starlette, uvicorn, Jinja2). The
command registers without them; its ``run`` imports them and names the extra when missing.
"""
