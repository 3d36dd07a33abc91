from dynadiff_fast.cli import main

raise SystemExit(main())
