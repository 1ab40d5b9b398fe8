"""Helpers shared by the app's pages (frame and login gate, sidebar, cached store loaders, URL state).

They live outside ``pages/`` on purpose: Streamlit serves every file of ``pages/`` as a page by its URL
path before the entry script's ``st.navigation`` takes over (a fresh server's first request), so a
helper module there ran before login (issue 27: ``/loaders``, ``/frame``, ``/sidebar``). Only real
pages, each guarded by :func:`pages_support.frame.enter_page`, are in ``pages/``.
"""
