"""The test kit: every helper the tests (and bench/) share, one module per subject, so nothing is written twice.

- ``settings``: the tokens tests use, ``make_settings``, and ``Proxy`` (a proxy started in the test's loop).
- ``ide``: an IDE's HTTP session and the steps of its lifecycle (contents, kernelspecs, sessions, execute).
- ``kernel``: kernel messages in the v1 binary and legacy JSON formats, and ``KernelChannel`` to speak them.
- ``frames``: websocket frames and the handshake, as a fake hub or a test writes and reads them by hand.
- ``rawhttp``: raw HTTP on a socket, async (``exchange``, ``read_answer``) and blocking (``request``).
- ``fakehubs``: upstreams that misbehave in one precise way (``fake_hub``, ``echo_app``, ...).
- ``env``: the environment a ``proxy.py`` subprocess is started with, as a user would set it.
- ``process``: ``proxy.py`` in a subprocess (``run_proxy``, ``failed_start``).
- ``hub``: a real JupyterHub; ``netservers``: real tinyproxy and nginx, and a CONNECT proxy of our own.

Fixtures stay in tests/conftest.py, where pytest finds them; they are built from these helpers.
"""
