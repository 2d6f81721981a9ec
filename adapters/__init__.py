"""Loop adapters: each decides *when* to pump a :class:`wsserver.Server`.

``wsserver.adapters.tk``, ``.qt`` and ``.asyncio`` attach a server to a
Tkinter root, a Qt application or an asyncio loop. Importing this package
imports no GUI toolkit.
"""
