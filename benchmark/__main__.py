from benchmark.cli import main

# Guarded: a child process of the local launcher (multiprocessing's forkserver) imports this module
# again under another name, and must not run the command line a second time.
if __name__ == "__main__":
    raise SystemExit(main())
