from postcollapse.cli import main

raise SystemExit(main())
