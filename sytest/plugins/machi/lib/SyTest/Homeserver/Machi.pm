# machi as a SyTest homeserver: writes a machi.yaml for each test server,
# starts `machi serve` and waits until its client port accepts connections.
#
# What SyTest hands a homeserver and where it goes:
#   client port      listen.client (plain HTTP; SyTest's client speaks both)
#   federation port  federation.listen (HTTPS), with a TLS key and a
#                    certificate signed by SyTest's test CA; that CA is
#                    federation.ca_bundle, so machi trusts SyTest's servers
#                    and the other machi; every server is allowed
#                    (policy.federation.allowed_servers: ["*"]), since
#                    SyTest's own federation server takes a random port
#   shared secret    registration.shared_secret ("reg_secret", the value
#                    SyTest's tests sign with) for /_synapse/admin/v1/register
#   test CA          also SSL_CERT_FILE, so that machi's push client trusts
#                    SyTest's HTTPS test servers (its push gateway)
#   database         SQLite in the server's folder; PostgreSQL when
#                    MACHI_SYTEST_POSTGRES is a DSN (a database per server is
#                    dropped and created through it)

use strict;
use warnings;

package SyTest::Homeserver::Machi;
use base qw( SyTest::Homeserver );

use Carp;
use Cwd qw( getcwd );
use File::Path qw( remove_tree );
use JSON ();
use SyTest::SSL qw( ensure_ssl_key create_ssl_cert );

sub _init
{
   my $self = shift;
   my ( $args ) = @_;

   $self->{binary} = delete $args->{binary};
   defined $self->{binary} && -x $self->{binary}
      or croak "machi binary not found (give --machi-binary or MACHI_BINARY)";

   $self->SUPER::_init( $args );

   my $idx = $self->{hs_index};
   $self->{ports} = {
      client     => main::alloc_port( "machi[$idx].client" ),
      federation => main::alloc_port( "machi[$idx].federation" ),
   };
   $self->{paths} = {};
}

# The server name carries the federation port, as other homeservers' do, so
# that user IDs stay the same once machi federates.
sub server_name
{
   my $self = shift;
   return $self->{bind_host} . ":" . $self->{ports}{federation};
}

sub federation_host
{
   my $self = shift;
   return $self->{bind_host};
}

sub federation_port
{
   my $self = shift;
   return $self->{ports}{federation};
}

sub public_baseurl
{
   my $self = shift;
   return "http://$self->{bind_host}:$self->{ports}{client}";
}

sub start
{
   my $self = shift;
   my $hs_dir = $self->{hs_dir};
   my $output = $self->{output};

   # A server folder is reused across runs: start from nothing.
   remove_tree( "$hs_dir/media" );
   unlink "$hs_dir/$_" for qw( machi.db machi.db-wal machi.db-shm signing.key machi.log );

   $self->_tls;

   my $config = $self->{paths}{config} = $self->write_yaml_file( "machi.yaml" => $self->_config );
   my $log = $self->{paths}{log} = "$hs_dir/machi.log";

   $output->diag( "Starting machi: $self->{binary} serve -config $config (log: $log)" );

   # stderr goes to a file, so that a whole run's server logs can be kept
   # next to its TAP. SyTest's push gateway and other test servers speak
   # HTTPS with certificates of SyTest's CA: machi's HTTP client trusts that
   # CA alone (Go reads SSL_CERT_FILE for its root pool).
   return $self->_start_process_and_await_connectable(
      setup => [ env => { %ENV, SSL_CERT_FILE => getcwd() . "/keys/ca.crt" } ],
      command => [ "/bin/sh", "-c", 'exec "$0" serve -config "$1" 2>>"$2"',
         $self->{binary}, $config, $log ],
      connect_host => $self->{bind_host},
      connect_port => $self->{ports}{client},
      name => "machi-$self->{hs_index}",
   )->else( sub {
      die "Unable to start machi: $_[0]\n";
   })->on_done( sub {
      $output->diag( "Started machi on " . $self->public_baseurl );
   });
}

sub _config
{
   my $self = shift;
   my $hs_dir = $self->{hs_dir};

   return {
      server_name      => $self->server_name,
      data_dir         => $hs_dir,
      signing_key_path => "signing.key",
      listen => {
         client          => "$self->{bind_host}:$self->{ports}{client}",
         metrics         => "",
         public_base_url => $self->public_baseurl,
         # A socket path under a deep work folder can pass the 108-byte
         # limit, and no test uses the admin CLI.
         admin_socket    => "",
      },
      federation => {
         listen    => "$self->{bind_host}:$self->{ports}{federation}",
         tls_cert  => $self->{paths}{tls_cert},
         tls_key   => $self->{paths}{tls_key},
         ca_bundle => getcwd() . "/keys/ca.crt",
         peers     => {},
         # server names are localhost:PORT, which the spec's discovery
         # resolves to that host and port
         discovery => JSON::true,
      },
      database => $self->_database,
      registration => {
         # SyTest registers its users through /register.
         enabled       => JSON::true,
         shared_secret => "reg_secret",
         bcrypt_cost   => 4,
      },
      rate_limits => { enabled => JSON::false },
      media => { path => "media", max_upload_bytes => 50 * 1024 * 1024 },
      policy => {
         # SyTest's clients are on loopback, hence office devices, which
         # working hours and enrollment codes do not touch; the rules are
         # turned off anyway so that no result depends on the clock.
         enrollment    => { required => JSON::false },
         working_hours => { enabled => JSON::false },
         # Every type, as a homeserver without the city's rules takes.
         uploads       => { office_allowed_types => [] },
         federation    => { allowed_servers => [ "*" ] },
      },
      log => { level => ( $ENV{MACHI_SYTEST_LOG_LEVEL} // "info" ), format => "text" },
   };
}

sub _database
{
   my $self = shift;
   my $dsn = $ENV{MACHI_SYTEST_POSTGRES};

   if( !defined $dsn || $dsn eq "" ) {
      return { engine => "sqlite", sqlite_path => "machi.db", synchronous => "normal" };
   }

   require DBI;
   require URI;

   my $uri = URI->new( $dsn );
   my $dbname = "sytest_machi_$self->{hs_index}";
   my %q = $uri->query_form;
   my $dbi = sprintf "dbi:Pg:dbname=%s;host=%s;port=%s", ( $uri->path =~ s{^/}{}r ) || "postgres",
      $uri->host, $uri->port;
   $dbi .= ";sslmode=$q{sslmode}" if $q{sslmode};
   my ( $user, $pass ) = split m/:/, ( $uri->userinfo // "" ), 2;

   my $dbh = DBI->connect( $dbi, $user, $pass, { RaiseError => 1, PrintError => 0 } )
      or die "connect to MACHI_SYTEST_POSTGRES: " . DBI->errstr;
   $dbh->do( "DROP DATABASE IF EXISTS $dbname WITH (FORCE)" );
   $dbh->do( "CREATE DATABASE $dbname" );
   $dbh->disconnect;

   $uri->path( "/$dbname" );
   $self->{output}->diag( "machi-$self->{hs_index} uses PostgreSQL database $dbname" );
   return { engine => "postgres", postgres_dsn => "$uri", synchronous => "normal" };
}

# _tls makes the federation listener's key and a certificate for the bind
# host, signed by SyTest's CA (keys/ca.crt, relative to the checkout we run
# in).
sub _tls
{
   my $self = shift;
   my $hs_dir = $self->{hs_dir};

   my $key  = $self->{paths}{tls_key}  = "$hs_dir/tls.key";
   my $cert = $self->{paths}{tls_cert} = "$hs_dir/tls.crt";
   ensure_ssl_key( $key );
   create_ssl_cert( $cert, $key, $self->{bind_host} );
}

1;
