"""The backends: the only way rules reach a training or serving platform (docs/architecture.md §1).

registry.py picks one by config name (local, local_container, sagemaker); base.py is the interface they share;
errors.py the exceptions callers catch, in a module of their own so that code which only catches them (the
tuner, the evaluation) imports no backend.
"""
