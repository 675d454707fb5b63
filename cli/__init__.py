"""The `deepcluster` command line: recipes, run directories and the click commands.

Installed as ``keras_deepcluster_cli`` (from the top-level ``cli/`` folder),
a package of its own so that ``deepcluster train --backend`` can set
``KERAS_BACKEND`` before keras is first imported.
"""
