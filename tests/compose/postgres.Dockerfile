# Stand-in for postgres:16 (tests/compose/setup.sh): Debian bookworm's PostgreSQL 15, with the
# official image's interface as far as docker-compose.yml uses it: POSTGRES_USER, _PASSWORD and
# _DB on first start, data in /var/lib/postgresql/data, pg_isready on PATH.
FROM trainhub-standin/bookworm:minbase
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql/15 \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY standin-postgres.sh /usr/local/bin/standin-postgres.sh
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["bash", "/usr/local/bin/standin-postgres.sh"]
CMD ["postgres"]
