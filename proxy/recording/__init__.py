"""Session recording: exec/attach sessions as asciicast v2, their index, live joins.

``cast`` (pure encoder/reader), ``recorder`` (the per-process service and per-session recorder, one
writer thread), ``stores`` (file, S3), ``index`` (session index interface and its file backend),
``hook`` (what the upgrade relay calls), ``join`` (``/kubegate/sessions/<id>/stream``), ``tail``
(following a session recorded by another worker process). See docs/ARCHITECTURE.md.
"""
