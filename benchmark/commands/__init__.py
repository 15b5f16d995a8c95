"""The command line's verbs: each module holds its verbs' argument builders beside their command
functions, which call library functions that return values and print what those return."""
