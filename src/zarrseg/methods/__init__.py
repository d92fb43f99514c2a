"""Built-in learning methods, one folder each (``unet``, ``dino``, ``finetune``, ...).

Each folder's ``__init__`` defines ``METHOD``, a ``zarrseg.learn.registry.MethodSpec``; the
registry imports a folder only when its method is asked for.
"""
